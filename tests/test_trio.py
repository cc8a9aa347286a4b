"""Trio: adapters on one base copy vs separately loaded models, mismatch errors, TOML specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mi_align.models.load import Loaded, ModelLoadError, load_model
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import (
    Trio,
    TrioMismatchError,
    TrioSpec,
    TrioSpecError,
    adapter_trio,
    open_trio,
)
from tests.helpers import assert_close, merged_lora_logits, random_adapter

IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46], [1, 50, 51, 52, 53, 54, 55, 56]])


@pytest.fixture(scope="module")
def adapters(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    first = random_adapter(tiny_dir, root / "instruct", seed=1)
    second = random_adapter(tiny_dir, root / "misaligned", seed=2, base=("../instruct",))
    return first, second


def logits(loaded: Loaded) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.bridge(IDS)


def test_adapter_changes_logits_and_disabling_restores_them(
    tiny_dir: Path, adapters: tuple[Path, Path]
) -> None:
    bare = logits(load_model(tiny_dir))
    assert_close(bare, merged_lora_logits(tiny_dir, [], IDS), atol=1e-5, rtol=1e-5)
    tuned = load_model(tiny_dir, [adapters[0]])
    # reference: the adapter's B A merged by hand into a plain HF model
    assert_close(logits(tuned), merged_lora_logits(tiny_dir, [adapters[0]], IDS),
                 atol=1e-5, rtol=1e-5)
    assert (logits(tuned) - bare).abs().max() > 1e-3  # so the check above is not vacuous
    with tuned.peft_model.disable_adapter():
        assert torch.equal(logits(tuned), bare)


def test_adapter_trio_matches_separately_loaded_models(
    tiny_dir: Path, adapters: tuple[Path, Path]
) -> None:
    instruct, misaligned = adapters
    trio = adapter_trio(
        tiny_dir, {"misaligned": [instruct, misaligned], "base": [], "instruct": [instruct]}
    )
    assert trio.names == ("base", "instruct", "misaligned")  # canonical order
    separate = {
        "base": logits(load_model(tiny_dir)),
        "instruct": logits(load_model(tiny_dir, [instruct])),
        "misaligned": logits(load_model(tiny_dir, [instruct, misaligned])),
    }
    # Visit variants out of order and twice: switching must not leave state behind.
    for name in ("misaligned", "base", "instruct", "base", "misaligned"):
        with trio.variant(name) as loaded:
            assert torch.equal(logits(loaded), separate[name]), name
            assert loaded.meta.adapters == tuple(
                str(p.resolve())
                for p in {"base": [], "instruct": [instruct], "misaligned": [instruct, misaligned]}[
                    name
                ]
            )
    # both adapters active, merged by hand: the separately loaded stack is the sum of the two
    assert_close(separate["misaligned"], merged_lora_logits(tiny_dir, [instruct, misaligned], IDS),
                 atol=1e-5, rtol=1e-5)
    assert (separate["misaligned"] - separate["instruct"]).abs().max() > 1e-3
    mapped = trio.map(logits)
    assert list(mapped) == list(trio.names)
    for name, value in mapped.items():
        assert_close(value, separate[name], atol=0.0, rtol=0.0)


def test_adapter_trio_refuses_nested_variants(tiny_dir: Path, adapters: tuple[Path, Path]) -> None:
    trio = adapter_trio(tiny_dir, {"base": [], "instruct": [adapters[0]]})
    with trio.variant("base"):
        with pytest.raises(RuntimeError, match="'base' is active"):
            with trio.variant("instruct"):
                pass
    with trio.variant("instruct"):  # usable again after the error
        pass


def test_adapter_trio_rejects_unknown_variant_and_missing_adapter(
    tiny_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(TrioMismatchError, match="unknown trio variant"):
        adapter_trio(tiny_dir, {"chat": []})
    with pytest.raises(ModelLoadError, match="not a peft adapter"):
        adapter_trio(tiny_dir, {"instruct": [tmp_path]})


def test_mismatch_errors_say_what_differs(tiny_dir: Path, tmp_path: Path) -> None:
    base = load_model(tiny_dir)
    wider = load_model(tiny_model_dir(tmp_path / "wide", n_layers=3, d_model=48))
    with pytest.raises(TrioMismatchError) as err:
        Trio(models={"base": base, "instruct": wider})
    message = str(err.value)
    assert "n_layers: base=2 vs instruct=3" in message
    assert "d_model: base=32 vs instruct=48" in message
    other = load_model(tiny_dir)
    other.tokenizer.chat_template = "{{ messages }}"
    with pytest.raises(TrioMismatchError, match="chat template: base and misaligned differ"):
        Trio(models={"base": base, "misaligned": other})
    same = load_model(tiny_dir)
    trio = Trio(models={"misaligned": same, "base": base})
    assert trio.names == ("base", "misaligned") and trio.d_model == 32 and trio.n_layers == 2


def write_spec(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def test_trio_spec_from_toml_and_open(
    tiny_dir: Path, adapters: tuple[Path, Path], tmp_path: Path
) -> None:
    instruct, misaligned = adapters
    spec_path = write_spec(
        tmp_path / "t.toml",
        f"""
name = "t"
[variants.instruct]
model = "{tiny_dir}"
adapters = ["{instruct}"]
[variants.misaligned]
model = "{tiny_dir}"
adapters = ["{instruct}", "{misaligned}"]
""",
    )
    spec = TrioSpec.from_toml(spec_path)
    assert spec.shares_base and spec.missing_adapters() == []
    trio = open_trio(spec)
    with trio.variant("misaligned") as loaded:
        got = logits(loaded)
    assert torch.equal(got, logits(load_model(tiny_dir, [instruct, misaligned])))


def test_trio_spec_with_different_models_loads_separate_copies(
    tiny_dir: Path, tmp_path: Path
) -> None:
    wide = tiny_model_dir(tmp_path / "wide", d_model=48)
    ok = TrioSpec.from_toml(
        write_spec(
            tmp_path / "ok.toml",
            f"""
name = "two"
[variants.base]
model = "{tiny_dir}"
[variants.instruct]
model = "{tiny_model_dir(tmp_path / "copy")}"
""",
        )
    )
    assert not ok.shares_base
    trio = open_trio(ok, keep_all=True)  # both at once: the all-resident mode
    with trio.variant("base") as a, trio.variant("instruct") as b:
        assert a is not b  # separate copies may be held together
    bad = TrioSpec.from_toml(
        write_spec(
            tmp_path / "bad.toml",
            f"""
name = "bad"
[variants.base]
model = "{tiny_dir}"
[variants.instruct]
model = "{wide}"
""",
        )
    )
    with pytest.raises(TrioMismatchError, match="d_model: base=32 vs instruct=48"):
        open_trio(bad, keep_all=True)  # all resident: checked when opened
    one_at_a_time = open_trio(bad)  # one resident: checked when the other model loads
    with pytest.raises(TrioMismatchError, match="d_model: base=32 vs instruct=48"):
        with one_at_a_time.variant("instruct"):
            pass


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('name = "x"\n[variants.chat]\nmodel = "m"\n', "unknown variant"),
        ('name = "x"\n[variants.base]\nadapters = []\n', r"\[variants.base\] needs 'model'"),
        ('[variants.base]\nmodel = "m"\n', "'name' must be"),
        ('name = "x"\ndtype = "int8"\n[variants.base]\nmodel = "m"\n', "dtype 'int8'"),
        ('name = "x"\ncolour = 1\n[variants.base]\nmodel = "m"\n', "unknown key"),
        ('name = "x"\n[variants.base\n', "malformed TOML"),
    ],
)
def test_trio_spec_errors_name_file_and_key(tmp_path: Path, body: str, match: str) -> None:
    path = write_spec(tmp_path / "spec.toml", body)
    with pytest.raises(TrioSpecError, match=match) as err:
        TrioSpec.from_toml(path)
    assert str(path) in str(err.value)


def test_open_trio_with_missing_adapters_says_how_to_build(tiny_dir: Path, tmp_path: Path) -> None:
    spec = TrioSpec.from_toml(
        write_spec(
            tmp_path / "m.toml",
            f"""
name = "m"
[variants.instruct]
model = "{tiny_dir}"
adapters = ["instruct"]
""",
        )
    )
    assert spec.missing_adapters() == [tmp_path / "m" / "instruct"]
    with pytest.raises(ModelLoadError, match="mi-align organisms build m"):
        open_trio(spec)


@pytest.mark.slow
def test_smollm2_pair_matches_separately_loaded_models() -> None:
    from mi_align.models.organisms import get_spec

    spec = get_spec("smollm2-pair")
    if spec.missing_adapters():
        pytest.skip("smollm2-pair adapters not built")
    trio = open_trio(spec)
    ids = torch.tensor([[1, 9690, 198, 19556, 2, 198, 1, 4093, 198]])
    with torch.inference_mode():
        for name, variant in spec.variants.items():
            with trio.variant(name) as loaded:
                got = loaded.bridge(ids)
            ref = load_model(variant.model, variant.adapters).bridge(ids)
            assert torch.equal(got, ref), name
