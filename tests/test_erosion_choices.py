"""Typed choices of the erosion configs: text form parsed in one place, round trips, selectors
equal to the activations module's factories, and configs' JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch

from mi_align.activations import make_selector
from mi_align.data.tokenize import encode_dataset, iter_batches
from mi_align.erosion.activation_similarity import ActivationSimilarityConfig
from mi_align.erosion.causal_result import CausalConfig
from mi_align.erosion.choices import (
    ContentTokens,
    Contrastive,
    FirstTokens,
    LastToken,
    ModelDifference,
    ResponseTokens,
    config_value,
    parse_direction,
    parse_positions,
)
from mi_align.erosion.gradient_geometry import GradientConfig
from mi_align.erosion.logprobs import TokenLogprobConfig
from mi_align.erosion.loss_vectors import LossVectorConfig
from mi_align.erosion.next_token import NextTokenConfig
from mi_align.erosion.projection import ProjectionConfig
from mi_align.erosion.svd_directions import SVDConfig
from mi_align.models.load import load_model
from mi_align.models.tiny import tiny_model_dir
from tests.erosion_support import convs


@pytest.mark.parametrize("text, value", [
    ("first:10", FirstTokens(10)), ("first:1", FirstTokens(1)), ("response", ResponseTokens()),
    ("last", LastToken()), ("content", ContentTokens()),
])
def test_positions_round_trip(text: str, value: object) -> None:
    assert parse_positions(text) == value and str(value) == text


@pytest.mark.parametrize("text", ["first:", "first:x", "first:0", "middle", "", "First:3"])
def test_bad_positions_are_clear_errors(text: str) -> None:
    with pytest.raises(ValueError, match="positions|k must be"):
        parse_positions(text)


@pytest.mark.parametrize("text, value", [
    ("instruct-base", ModelDifference("instruct", "base")),
    ("misaligned-instruct", ModelDifference("misaligned", "instruct")),
    ("contrastive:instruct", Contrastive("instruct")),
])
def test_direction_round_trip(text: str, value: object) -> None:
    assert parse_direction(text) == value and str(value) == text


@pytest.mark.parametrize("text", ["instruct", "base-base", "a-b-c", "-base", "contrastive:"])
def test_bad_directions_are_clear_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_direction(text)


@pytest.mark.parametrize("spec", ["first:3", "response", "last"])
def test_selectors_equal_the_activation_factories(tmp_path, spec: str) -> None:
    loaded = load_model(tiny_model_dir(tmp_path / "m", seed=0))
    batch = next(iter(iter_batches(encode_dataset(loaded.tokenizer, convs()), 12,
                                   loaded.tokenizer.pad_token_id)))
    got = parse_positions(spec).selector(loaded.tokenizer)(batch)
    assert torch.equal(got, make_selector(spec)(batch)) and got.any()


def test_content_tokens_drop_the_closing_template_token(tmp_path) -> None:
    loaded = load_model(tiny_model_dir(tmp_path / "m", seed=0))
    batch = next(iter(iter_batches(encode_dataset(loaded.tokenizer, convs()), 12,
                                   loaded.tokenizer.pad_token_id)))
    content = ContentTokens().selector(loaded.tokenizer)(batch)
    response = ResponseTokens().selector(loaded.tokenizer)(batch)
    # exactly one token per response (its closing end-of-turn token) is dropped
    assert torch.equal(response.sum(1) - content.sum(1), torch.ones(len(convs()), dtype=torch.long))
    assert not (content & ~response).any()


def test_config_value_parses_cli_text_and_json() -> None:
    assert config_value(tuple[int, ...] | None, "0,3") == (0, 3)
    assert config_value(tuple[int, ...] | None, [0, 3]) == (0, 3)
    assert config_value(tuple[int, ...] | None, "none") is None
    assert config_value(tuple[str, str], "instruct,base") == ("instruct", "base")
    assert config_value(bool, "yes") is True and config_value(float, 1) == 1.0
    with pytest.raises(ValueError, match="cannot parse k='x' as int"):
        config_value(int, "x", "k")


@pytest.mark.parametrize("cls", [ProjectionConfig, LossVectorConfig, GradientConfig,
                                 ActivationSimilarityConfig, SVDConfig, TokenLogprobConfig,
                                 NextTokenConfig, CausalConfig])
def test_every_config_round_trips_through_json(cls: type) -> None:
    cfg = cls()
    d = json.loads(json.dumps(cfg.to_dict()))
    assert cls.from_dict(d) == cfg and cls.from_dict(d).to_dict() == d
    with pytest.raises(ValueError, match="no field"):
        cls.from_dict({**d, "bogus": 1})


@pytest.mark.parametrize("make", [
    lambda: ProjectionConfig(positions="first:3"),  # type: ignore[arg-type]
    lambda: ProjectionConfig(direction="instruct-base"),  # type: ignore[arg-type]
    lambda: SVDConfig(positions="last"),  # type: ignore[arg-type]
    lambda: CausalConfig(positions="first:10"),  # type: ignore[arg-type]
    lambda: ActivationSimilarityConfig(positions=None),  # type: ignore[arg-type]
])
def test_configs_take_typed_choices_not_strings(make) -> None:  # type: ignore[no-untyped-def]
    # TypeError under the test-time type checker, ValueError from the config's own check
    with pytest.raises((TypeError, ValueError)):
        make()


def test_non_default_choices_round_trip() -> None:
    cfg = ProjectionConfig(positions=LastToken(), direction=Contrastive("instruct"),
                           layers=(0, 2))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["positions"] == "last" and d["direction"] == "contrastive:instruct"
    assert ProjectionConfig.from_dict(d) == cfg
    svd = SVDConfig(positions=ContentTokens(), pair=("misaligned", "base"))
    assert SVDConfig.from_dict(json.loads(json.dumps(svd.to_dict()))) == svd
