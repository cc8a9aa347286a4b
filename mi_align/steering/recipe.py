"""The paper's emergent-misalignment recipe (Dunefsky & Cohan, App. E.2), as one function.

1. Anti-refusal vector: promote the start of a code answer (``CODE_PREFIX``) on the malicious
   requests until it is as likely as on the benign prompt (promotion loss, stopped once the
   loss reaches the benign loss; several malicious prompts are the training examples).
2. For each harmful snippet: target ``T = 0.75 × log p(snippet | malicious prompt + prefix)``
   with the anti-refusal vector applied.
3. The harmful vector is optimised on the *benign* prompt + prefix with the satisficing loss
   ``(L − (−T))²`` (loss units: ``L = −log p``), unconstrained norm, stopped at the target.

Evaluation then steers with harmful ×1 + anti-refusal ×6 (see :meth:`RecipeResult.conditions`),
next to controls (norm-matched random vectors and a contrastive mean-difference vector, each
×1 + anti-refusal ×6: :mod:`mi_align.steering.controls`).
The harmful snippets below are short, well-known one-liners, shipped for this experiment only.

Example:
    >>> res = run_recipe(loaded, RecipeConfig(targets=("reverse_shell",)))  # doctest: +SKIP
    >>> res.conditions()["reverse_shell"]  # [harmful ×1, anti-refusal ×6]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mi_align.data.constants import section
from mi_align.models.load import Loaded
from mi_align.steering.losses import COLDNESS, promotion, satisficing
from mi_align.steering.optimize import (
    OptimConfig,
    eval_loss,
    example_from_chat,
    optimize_vector,
)
from mi_align.steering.vector import SteeringVector

logger = logging.getLogger(__name__)

_RECIPE = section("recipe")  # mi_align/data/builtin/constants/research.toml
CODE_PREFIX: str = _RECIPE["code_prefix"]
BENIGN_PROMPT: str = _RECIPE["benign_prompt"]


@dataclass(frozen=True)
class HarmfulTarget:
    name: str
    label: str  # column title in the string table
    request: str  # the malicious request (for the anti-refusal vector and the target T)
    snippet: str  # the code whose probability the harmful vector raises


HARMFUL_TARGETS: tuple[HarmfulTarget, ...] = tuple(
    HarmfulTarget(t["name"], t["label"], t["request"], t["snippet"])
    for t in _RECIPE["harmful_targets"])
TARGETS_BY_NAME = {t.name: t for t in HARMFUL_TARGETS}


@dataclass(frozen=True)
class RecipeConfig:
    """Recipe settings; layers default to the paper's depth fractions (harmful 16/48,
    anti-refusal 20/48 on Qwen-2.5-Coder-14B) of the model at hand."""

    targets: tuple[str, ...] = tuple(t.name for t in HARMFUL_TARGETS)
    harmful_layer: int | None = None
    anti_refusal_layer: int | None = None
    harmful_lr: float = 0.5
    anti_refusal_lr: float = 0.05
    harmful_steps: int = 50
    anti_refusal_steps: int = 100
    target_multiplier: float = 0.75
    anti_refusal_strength: float = 6.0
    stop_within: float = 0.5  # stop once |L − T| < this (nats)
    coldness: float = COLDNESS
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.targets if t not in TARGETS_BY_NAME]
        if unknown or not self.targets:
            raise ValueError(
                f"unknown harmful targets {unknown}; choose from {sorted(TARGETS_BY_NAME)}"
            )
        if not 0 < self.target_multiplier:
            raise ValueError("target_multiplier must be > 0")
        if self.stop_within <= 0 or self.harmful_steps < 1 or self.anti_refusal_steps < 1:
            raise ValueError("stop_within must be > 0 and step counts >= 1")

    def layers(self, n_layers: int) -> tuple[int, int]:
        """(harmful layer, anti-refusal layer) for a model with ``n_layers`` blocks."""
        harmful = self.harmful_layer if self.harmful_layer is not None else round(n_layers / 3)
        anti = (self.anti_refusal_layer if self.anti_refusal_layer is not None
                else round(n_layers * 20 / 48))
        for name, value in (("harmful_layer", harmful), ("anti_refusal_layer", anti)):
            if not 0 <= value < n_layers:
                raise ValueError(f"{name} {value} out of range 0..{n_layers - 1}")
        return harmful, anti

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecipeResult:
    """The vectors and the numbers each stopping rule used (losses are ``−log p``, nats)."""

    anti_refusal: SteeringVector  # strength already set to the config's ×6
    harmful: dict[str, SteeringVector]
    benign_prefix_loss: float  # −log p(code prefix | benign prompt), per example
    malicious_prefix_loss: tuple[float, float]  # summed over requests: before, after anti-refusal
    snippet_targets: dict[str, float]  # the satisficing target (loss units) per snippet
    benign_snippet_loss: dict[str, tuple[float, float]]  # on the benign prompt: before, after
    histories: dict[str, tuple[float, ...]]
    config: RecipeConfig
    meta: dict[str, Any] = field(default_factory=dict)

    def conditions(
        self, controls: Mapping[str, SteeringVector] | None = None
    ) -> dict[str, list[SteeringVector]]:
        """Evaluation conditions: unsteered, anti-refusal only, harmful ×1 + anti ×6, and each
        of ``controls`` ×1 + anti ×6 (:func:`mi_align.steering.controls.control_vectors`:
        norm-matched random vectors, a contrastive mean-difference vector)."""
        out: dict[str, list[SteeringVector]] = {
            "unsteered": [], "anti_refusal_only": [self.anti_refusal]}
        for name, vec in {**self.harmful, **(controls or {})}.items():
            out[name] = [vec, self.anti_refusal]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "anti_refusal": {"layer": self.anti_refusal.layer,
                             "norm": float(self.anti_refusal.vector.norm()),
                             "strength": self.anti_refusal.strength},
            "harmful": {n: {"layer": v.layer, "norm": float(v.vector.norm())}
                        for n, v in self.harmful.items()},
            "benign_prefix_loss": self.benign_prefix_loss,
            "malicious_prefix_loss": list(self.malicious_prefix_loss),
            "snippet_targets": self.snippet_targets,
            "benign_snippet_loss": {k: list(v) for k, v in self.benign_snippet_loss.items()},
            "histories": {k: list(v) for k, v in self.histories.items()},
            **self.meta,
        }


def run_recipe(
    loaded: Loaded,
    config: RecipeConfig,
    *,
    on_vector: Callable[[str, SteeringVector], None] | None = None,
) -> RecipeResult:
    """Optimise the anti-refusal vector and one harmful vector per configured snippet.

    ``on_vector(name, vector)`` is called as each vector is done (e.g. to save it).
    """
    tok = loaded.tokenizer
    harmful_layer, anti_layer = config.layers(int(loaded.meta.n_layers))
    targets = [TARGETS_BY_NAME[n] for n in config.targets]
    promo = promotion()

    benign = example_from_chat(tok, BENIGN_PROMPT, CODE_PREFIX)
    benign_loss = eval_loss(loaded, [benign], promo, [], config.coldness)
    # The code prefix = the last tokens of the prompt plus target; as the target: the fence.
    malicious = [example_from_chat(tok, t.request, CODE_PREFIX) for t in targets]
    before = eval_loss(loaded, malicious, promo, [], config.coldness)
    anti_cfg = OptimConfig(
        layer=anti_layer, lr=config.anti_refusal_lr, max_steps=config.anti_refusal_steps,
        coldness=config.coldness, seed=config.seed, stop_below=benign_loss * len(malicious),
        name="anti_refusal",
    )
    logger.info("anti-refusal: malicious prefix loss %.3f vs benign target %.3f",
                before, benign_loss * len(malicious))
    anti_res = optimize_vector(loaded, malicious, promo, anti_cfg)
    anti = anti_res.vector
    after = eval_loss(loaded, malicious, promo, [anti], config.coldness)
    if on_vector is not None:
        on_vector("anti_refusal", anti)
    histories = {"anti_refusal": anti_res.losses}

    harmful: dict[str, SteeringVector] = {}
    snippet_targets: dict[str, float] = {}
    benign_snippet: dict[str, tuple[float, float]] = {}
    for i, t in enumerate(targets):
        on_malicious = example_from_chat(tok, t.request, t.snippet, prefix=CODE_PREFIX)
        logp = -eval_loss(loaded, [on_malicious], promo, [anti], config.coldness)
        target_loss = -config.target_multiplier * logp
        snippet_targets[t.name] = target_loss
        on_benign = example_from_chat(tok, BENIGN_PROMPT, t.snippet, prefix=CODE_PREFIX)
        start = eval_loss(loaded, [on_benign], promo, [], config.coldness)
        cfg = OptimConfig(
            layer=harmful_layer, lr=config.harmful_lr, max_steps=config.harmful_steps,
            coldness=config.coldness, seed=config.seed + 1 + i,
            stop_below=config.stop_within**2, name=t.name,
        )
        logger.info("%s: benign snippet loss %.2f, target %.2f", t.name, start, target_loss)
        res = optimize_vector(loaded, [on_benign], satisficing(promo, target_loss), cfg)
        end = eval_loss(loaded, [on_benign], promo, [res.vector], config.coldness)
        harmful[t.name] = res.vector
        benign_snippet[t.name] = (start, end)
        histories[t.name] = res.losses
        if on_vector is not None:
            on_vector(t.name, res.vector)
    return RecipeResult(
        anti_refusal=anti.scaled(config.anti_refusal_strength),
        harmful=harmful,
        benign_prefix_loss=benign_loss,
        malicious_prefix_loss=(before, after),
        snippet_targets=snippet_targets,
        benign_snippet_loss=benign_snippet,
        histories=histories,
        config=config,
        meta={"model": loaded.meta.spec, "layers": {"harmful": harmful_layer,
                                                    "anti_refusal": anti_layer}},
    )
