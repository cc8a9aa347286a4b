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

from mi_align.models.load import Loaded, ModelMeta, load_model

__all__ = ["Loaded", "ModelMeta", "load_model"]
__version__ = "0.1.0"
