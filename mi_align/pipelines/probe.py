"""``mi-align analyze probe``: linear probes on a trio's instruct model (issue 14).

The probe itself is :mod:`mi_align.evaluation.probe`; this is the trio-level run the
registry (:data:`mi_align.pipelines.erosion.ANALYSES`) and ``analyses/probe.py`` share: the
instruct model's pooled response activations of the two datasets, probed per layer, and each
probe weight compared with the alignment direction ``normalise(mean instruct − mean base)``
fitted on the same examples at the erosion projection's positions (the first 10 response
tokens), so "does the probe read the alignment direction?" has an answer per layer.

Groups: ``inputs.keys`` when given (e.g. the aims of ``toxic`` / ``toxic_reject``, two rows
each), else :func:`~mi_align.evaluation.probe.pair_groups` (paired rows stay together in every
split and relabelling), else one group per example.

Example:
    >>> from mi_align.pipelines.probe import DIRECTION_POSITIONS
    >>> DIRECTION_POSITIONS
    'first:10'
"""

from __future__ import annotations

import dataclasses

from mi_align.erosion.common import Inputs
from mi_align.erosion.projection_fit import unit_directions
from mi_align.errors import InputError
from mi_align.evaluation.probe import (
    ProbeConfig,
    ProbeResult,
    pair_groups,
    probe_layers,
    response_features,
)
from mi_align.models.trio import Trio

__all__ = ["DIRECTION_POSITIONS", "probe_trio"]

DIRECTION_POSITIONS = "first:10"  # the erosion projection's default (the paper's)


def probe_trio(trio: Trio, inputs: Inputs, config: ProbeConfig | None = None) -> ProbeResult:
    """Probe ``inputs``' two datasets (class 0, class 1) on the instruct model, per layer."""
    cfg = config or ProbeConfig()
    if len(inputs.groups) != 2:
        raise InputError("probe", f"needs exactly two datasets, got {len(inputs.groups)}",
                         "pass --data NEGATIVE POSITIVE (e.g. toxic toxic_reject)")
    missing = [m for m in ("base", "instruct") if m not in trio.names]
    if missing:
        raise InputError("probe", f"needs the trio's {missing} model(s)",
                         f"the trio has {', '.join(trio.names)}")
    (neg_name, neg), (pos_name, pos) = inputs.groups
    data = [*neg, *pos]
    layers = cfg.layers if cfg.layers is not None else tuple(range(trio.n_layers + 1))
    dir_cfg = dataclasses.replace(cfg, positions=DIRECTION_POSITIONS)
    means = {}
    for name in ("base", "instruct"):
        with trio.variant(name) as loaded:
            means[name] = response_features(loaded, data, layers, dir_cfg).mean(0)
            if name == "instruct":
                feats = response_features(loaded, data, layers, cfg)
    groups = list(inputs.keys) if inputs.keys is not None else pair_groups(neg, pos)
    return probe_layers(feats, [0] * len(neg) + [1] * len(pos), groups, cfg, layers=layers,
                        classes=(neg_name, pos_name),
                        direction=unit_directions(means["instruct"], means["base"]),
                        direction_name="instruct − base (erosion projection fit, first 10 "
                                       "response tokens, same examples)")
