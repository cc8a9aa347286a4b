"""mi_align: mechanistic tools for emergent misalignment on TransformerLens 4.

Two research results set the scope: one-shot optimised steering vectors that induce emergent
misalignment (Dunefsky & Cohan), and alignment erosion across base / instruct / misaligned
models (Giordani, arXiv 2507.03662). Models are TransformerLens ``TransformerBridge`` objects
with the classic hook names; real weights come from registry packages, offline.

Axis vocabulary (every jaxtyping shape in the package uses only these names):

    batch      sequences in a batch
    pos        token positions in a sequence
    layer      transformer blocks (residual stream entering block L is ``blocks.L.hook_resid_pre``)
    d_model    residual-stream width
    vocab      vocabulary entries
    example    examples of a dataset (rows of a per-example matrix)
    component  singular vectors / principal components
    param      flattened parameters (a gradient)
    sketch     sketched (compressed) dimension
    model      models of a trio (base / instruct / misaligned)

Example:
    >>> from mi_align import load_model
    >>> loaded = load_model("smollm2-135m-instruct")  # doctest: +SKIP
    >>> loaded.bridge.cfg.n_layers  # doctest: +SKIP
    30
"""

from __future__ import annotations

from mi_align.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_eval_file": "mi_align.data.betley",
    "Loaded": "mi_align.models.load",
    "ModelMeta": "mi_align.models.load",
    "load_model": "mi_align.models.load",
    "Trio": "mi_align.models.trio",
    "TrioSpec": "mi_align.models.trio",
    "load_trio": "mi_align.models.organisms",
    "resolve_trio": "mi_align.models.organisms",
    "Conversation": "mi_align.data.chat",
    "Message": "mi_align.data.chat",
    "load_dataset": "mi_align.data.chat",
    "eval_questions": "mi_align.data.chat",
    "SteeringVector": "mi_align.steering.vector",
    "SteeringOperator": "mi_align.steering.vector",
    "additive": "mi_align.steering.vector",
    "clamp": "mi_align.steering.vector",
    "apply_steering": "mi_align.steering.vector",
    "OptimConfig": "mi_align.steering.optimize",
    "optimize_vector": "mi_align.steering.optimize",
    "LocalJudge": "mi_align.evaluation.judge",
    "OpenAIJudge": "mi_align.evaluation.judge",
    "judge_responses": "mi_align.evaluation.judge",
    "wilson_interval": "mi_align.stats",
    "fisher_test": "mi_align.stats",
    "cluster_bootstrap": "mi_align.stats",
    "grouped_permutation_test": "mi_align.stats",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
