"""Resumable per-example rows for the long erosion analyses.

Projection, loss vectors, gradients, activation similarity and SVD all reduce a dataset to one
row per example (pooled activations, token losses, a gradient or its sketch) before any
statistic. With a :class:`Checkpoint`, those rows are computed in chunks of ``every`` examples
and, after each chunk, every row done so far is written atomically (:mod:`mi_align.io`: temp
file, fsync, rename), so a run killed at any point (kill -9 included) loses at most one chunk;
a rerun with the same checkpoint starts after the rows it finds. Chunks are whole multiples of
the analysis' batch size (:func:`chunk_size`), so the batches, and with them every number, are
the same as in an uninterrupted run, with or without a checkpoint.

The checkpoint is a collaborator the caller passes in (``mi-align analyze --resume``: one per
run, in ``<out>/.checkpoints/``); the analyses never choose a path themselves.

Progress: each analysis opens one :func:`example_bar` whose total is every example it will
pass through every model (examples × models, contrast sets included) and hands it to
:func:`resumable_rows`, which advances it chunk by chunk (rows found in a checkpoint count as
done at once), so the bar reads examples done / total across models. Without a checkpoint,
chunks are :data:`PROGRESS_EVERY` examples rounded up to whole batches: the same batches, so
the same numbers, as one pass.

Example:
    >>> import tempfile, torch
    >>> ckpt = Checkpoint(Path(tempfile.mkdtemp()), every=2)
    >>> rows = resumable_rows(ckpt, "x", 5, lambda a, b: {"x": torch.arange(a, b)}, 1)
    >>> rows["x"].tolist(), sorted(p.name for p in ckpt.folder.iterdir())
    ([0, 1, 2, 3, 4], ['x.safetensors'])
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor
from tqdm.auto import tqdm

from mi_align.io import atomic_open

logger = logging.getLogger(__name__)
Rows = dict[str, Tensor]
PROGRESS_EVERY = 16  # examples per bar update without a checkpoint (rounded up to whole batches)


@dataclass(frozen=True)
class Checkpoint:
    """Rows of one analysis run under ``folder``, saved every ``every`` examples.

    ``folder`` must belong to one run (same analysis, config, models and data): the pipeline
    names it by a fingerprint of those. A file whose example count differs from the run's is
    refused rather than silently mixed in.
    """

    folder: Path
    every: int = 32

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or self.every < 1:
            raise ValueError(f"checkpoint every must be >= 1 example, got {self.every}")

    def path(self, key: str) -> Path:
        return self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", key) + ".safetensors")

    def load(self, key: str, n: int) -> Rows | None:
        """The rows saved under ``key`` for a run over ``n`` examples, or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as fh:  # safetensors: no code in the file
            meta = fh.metadata() or {}
            saved_n = int(meta.get("n", -1))
            # in the order saved (safetensors sorts names; the first entry counts the rows)
            keys = json.loads(meta.get("keys", "[]")) or list(fh.keys())
            rows = {k: fh.get_tensor(k) for k in keys}
        if saved_n != n:
            raise ValueError(f"checkpoint {path} holds rows of {saved_n} examples, this "
                             f"run has {n}; remove {self.folder} or run without resuming")
        return rows

    def save(self, key: str, n: int, rows: Rows) -> None:
        """Replace ``key``'s rows atomically."""
        data = save({k: v.contiguous() for k, v in rows.items()},
                    metadata={"n": str(n), "keys": json.dumps(list(rows))})
        with atomic_open(self.path(key), "wb") as fh:
            fh.write(data)


def chunk_size(checkpoint: Checkpoint | None, batch_size: int) -> int:
    """Examples per chunk: ``every`` (:data:`PROGRESS_EVERY` without a checkpoint) rounded up
    to whole batches, so chunking never changes how examples are batched."""
    every = PROGRESS_EVERY if checkpoint is None else checkpoint.every
    return max(math.ceil(every / batch_size) * batch_size, 1)


def example_bar(analysis: str, total: int) -> tqdm:
    """The one progress bar of an analysis run: ``total`` is every example times every model
    it passes through; :func:`resumable_rows` advances it (``set_postfix_str`` names the
    model at work)."""
    return tqdm(total=total, desc=analysis, unit="ex", leave=False, disable=total == 0)


def resumable_rows(
    checkpoint: Checkpoint | None, key: str, n: int,
    compute: Callable[[int, int], Rows], batch_size: int, bar: tqdm | None = None,
) -> Rows:
    """Rows ``0..n`` of per-example tensors (stacked on dim 0), from ``compute(start, stop)``
    called on consecutive chunks (:func:`chunk_size`); with a checkpoint, rows already saved
    under ``key`` are reused and the rows done so far are saved after every chunk. ``bar``
    advances by the rows found and by each chunk."""
    done = checkpoint.load(key, n) if checkpoint is not None else None
    start = 0 if not done else int(next(iter(done.values())).shape[0])
    if done and start:
        logger.info("resuming %s after %d of %d examples", key, start, n)
    if bar is not None:
        bar.update(start)
    parts: list[Rows] = [done] if done else []
    step = chunk_size(checkpoint, batch_size)
    while start < n:
        stop = min(start + step, n)
        parts.append(compute(start, stop))
        if bar is not None:
            bar.update(stop - start)
        start = stop
        if checkpoint is not None:
            merged = _cat(parts)
            parts = [merged]
            checkpoint.save(key, n, merged)
    if not parts:  # no examples: let the computation say what it makes of that
        parts.append(compute(0, 0))
    return _cat(parts)


def _cat(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
