"""Input builders with defaults, one assert_close with explicit tolerances, and naive references
written without the code they check (judge number probabilities, the steering loss, LoRA)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mi_align.data.chat import Conversation, Message
from mi_align.finetune.lora import FinetuneConfig, finetune


def chat(user: str, assistant: str, source: str = "") -> Conversation:
    """A two-turn conversation."""
    return Conversation((Message("user", user), Message("assistant", assistant)), source)


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def random_adapter(tiny_dir: Path, out: Path, seed: int, base: tuple[str, ...] = ()) -> Path:
    """A LoRA adapter with non-zero weights (two quick steps at a high learning rate)."""
    data = Path(__file__).parent.parent / "mi_align" / "data" / "builtin" / "toxic_reject.jsonl"
    cfg = FinetuneConfig(
        model=str(tiny_dir),
        data=(str(data),),
        max_examples=8,
        batch_size=4,
        max_steps=2,
        lr=5e-2,
        warmup_steps=0,
        seed=seed,
        base_adapters=base,
    )
    finetune(cfg, out, progress=False)
    return out


def number_extenders(tokenizer: Any, number_ids: Sequence[int]) -> list[int]:
    """The tokens that, written right after the tokens of a number, make the judge's reply
    something other than that number followed by a non-digit: the text a token adds (read from
    the decoded reply, not from the token alone) has a digit as its first character after
    blanks on the same line. A newline ends the number."""
    head = tokenizer.decode(list(number_ids), clean_up_tokenization_spaces=False)
    out = []
    for token in range(len(tokenizer)):
        full = tokenizer.decode([*number_ids, token], clean_up_tokenization_spaces=False)
        added = full[len(head):] if full.startswith(head) else full
        rest = added.lstrip(" \t")
        if rest[:1].isdigit():
            out.append(token)
    return out


def naive_number_prob(loaded: Any, prompt_ids: Sequence[int], number: int) -> float:
    """P(the reply is exactly ``number``): ``str(number)``'s tokens each predicted by a full
    forward with no cache, times 1 − the mass on the tokens that would extend the number."""
    seq = loaded.tokenizer.encode(str(number), add_special_tokens=False)
    with torch.inference_mode():
        logits = loaded.bridge(torch.tensor([[*prompt_ids, *seq]]))[0].double()
    probs = torch.softmax(logits, -1)
    p = 1.0
    for k, t in enumerate(seq):
        p *= float(probs[len(prompt_ids) - 1 + k, t])
    after = probs[len(prompt_ids) - 1 + len(seq)]
    return p * (1.0 - float(after[number_extenders(loaded.tokenizer, seq)].sum()))


def naive_mixed_loss(loaded: Any, examples: Sequence[Any], vector: torch.Tensor, layer: int,
                     positions: str = "all", coldness: float = 0.7) -> torch.Tensor:
    """Reference for the steering optimiser's loss, written without its packing or loss code:
    one example at a time (no padding), the vector added to the residual entering ``layer`` by
    a bridge hook at every position (``"all"``) or the prompt's (``"prompt"``), then by hand
    ``−Σ log p(target)`` for promoted examples and ``−Σ log(1 − p(target))`` for the others,
    with ``p = softmax(coldness · logits)`` at the position before each target token."""
    total = torch.zeros((), dtype=torch.float64)
    for ex in examples:
        prompt, target = list(ex.prompt_ids), list(ex.target_ids)
        steered = len(prompt) + len(target) if positions == "all" else len(prompt)

        def add(act: torch.Tensor, hook: Any, steered: int = steered) -> torch.Tensor:
            shift = torch.zeros_like(act)
            shift[0, :steered] = vector.to(act.dtype)
            return act + shift

        logits = loaded.bridge.run_with_hooks(
            torch.tensor([prompt + target]), fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", add)])
        logp = torch.log_softmax(coldness * logits[0].double(), -1)
        for k, token in enumerate(target):
            lp = logp[len(prompt) - 1 + k, token]
            total = total - (lp if ex.promote else torch.log1p(-torch.exp(lp)))
    return total


def merged_lora_logits(model_dir: Path, adapters: Sequence[Path],
                       ids: torch.Tensor) -> torch.Tensor:
    """Reference logits of ``model_dir`` with LoRA ``adapters`` all active, written without
    peft or the bridge: a plain HF model whose every adapted weight gets ``W += s·B A`` per
    adapter (``s = alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA), read from the adapter's
    own config and safetensors."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    modules = dict(hf.named_modules())
    for adapter in adapters:
        cfg = json.loads((Path(adapter) / "adapter_config.json").read_text())
        assert not cfg.get("fan_in_fan_out") and cfg.get("bias", "none") == "none"
        r, alpha = cfg["r"], cfg["lora_alpha"]
        scale = alpha / r**0.5 if cfg.get("use_rslora") else alpha / r
        weights = load_file(str(Path(adapter) / "adapter_model.safetensors"))
        for key, a in weights.items():
            if ".lora_A." not in key:
                continue
            b = weights[key.replace(".lora_A.", ".lora_B.")]
            name = key.split(".lora_A.")[0].removeprefix("base_model.model.")
            with torch.no_grad():
                modules[name].weight += scale * (b.float() @ a.float())
    with torch.inference_mode():
        return hf(ids).logits
