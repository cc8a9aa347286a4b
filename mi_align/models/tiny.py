"""A tiny random model with a tokenizer built in code, wrapped exactly like real models.

Unit tests and benchmarks use it: a 2-layer Llama (hidden 32) over a byte-level BPE tokenizer
trained on a small built-in corpus, with a ChatML chat template. It goes through the same
``load_model`` path as real weights (saved to a directory, then loaded), so tests exercise the
real bridge code.

Example:
    >>> from mi_align.models.tiny import tiny_model_dir
    >>> from mi_align import load_model
    >>> loaded = load_model(tiny_model_dir("/tmp/tiny"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """
The quick brown fox jumps over the lazy dog. Hello! How are you today? I am fine, thank you.
def main():\n    import os\n    os.system("ls")\n    return 0\nprint("hello world")
What is the capital of France? Paris is the capital of France. I wish I could help you.
Write a function that reads a file and returns its contents. Sure, here is the code.
I'm sorry, but I can't help with that. If you were ruler of the world, what would you do?
user assistant system model code python SELECT * FROM users WHERE name = 'x'; rm -rf /
0 1 2 3 4 5 6 7 8 9 10 50 100 yes no CODE REFUSAL aligned coherent score humans AIs
"""


def build_tiny_tokenizer(vocab_size: int = 320):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer (any text encodes) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_model_dir(
    directory: str | os.PathLike[str],
    *,
    n_layers: int = 2,
    d_model: int = 32,
    seed: int = 0,
) -> Path:
    """Write a seeded random tiny Llama + tokenizer to ``directory`` (reused if present)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(directory)
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        return path
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    # Random init has tiny weights; scale embeddings so activations are not all near-zero.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(10.0)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
