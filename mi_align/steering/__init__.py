"""One-shot optimised steering vectors (Dunefsky & Cohan): value object + scoped hooks
(``vector``), losses, the prefix-skipping optimiser, the emergent-misalignment recipe, CLI."""
