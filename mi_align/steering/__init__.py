"""One-shot optimised steering vectors (Dunefsky & Cohan): value object + scoped hooks
(``vector``), losses, the prefix-skipping optimiser, the emergent-misalignment recipe, CLI."""

from __future__ import annotations

from mi_align.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "export_gguf": "mi_align.steering.export",
    "import_gguf": "mi_align.steering.export",
    "export_safetensors": "mi_align.steering.export",
    "import_safetensors": "mi_align.steering.export",
    "SteeringVector": "mi_align.steering.vector",
    "SteeringOperator": "mi_align.steering.vector",
    "additive": "mi_align.steering.vector",
    "clamp": "mi_align.steering.vector",
    "apply_steering": "mi_align.steering.vector",
    "OptimConfig": "mi_align.steering.optimize",
    "OptimResult": "mi_align.steering.optimize",
    "TrainingExample": "mi_align.steering.optimize",
    "example_from_chat": "mi_align.steering.optimize",
    "optimize_vector": "mi_align.steering.optimize",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
