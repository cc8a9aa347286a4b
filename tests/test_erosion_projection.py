"""Layerwise projection against independent references.

- point estimates vs an explicit loop over examples, layers and tokens (HF hidden states);
- the group bootstrap vs an explicit loop over resamples (same seed semantics: one
  ``torch.Generator(seed)``, per part ``randint(G, (n_boot, G))``, parts in order fit, eval);
- the grouped label-swap null vs an explicit loop over all swap patterns;
- planted signal: a known direction added to one model's residual stream from layer L on is
  recovered with the right sign and first layer and the expected separation / relative position;
- absence: per-group random offsets (no common direction) are not reported under the grouped
  design, while a row split (groups on both sides) reports them — the design the null must fit;
- the derived groups equal the build script's task ids on the built-in code sets.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from mi_align.data.chat import Conversation, load_dataset
from mi_align.data.groups import response_groups
from mi_align.data.tokenize import encode_dataset
from mi_align.erosion.choices import Contrastive, FirstTokens, parse_direction
from mi_align.erosion.common import Inputs
from mi_align.erosion.projection import ProjectionConfig, ProjectionResult, layer_projection
from mi_align.erosion.projection_plot import (
    difference_projection,
    plot_difference_projection,
    plot_layer_projection,
)
from mi_align.geometry import random_unit_directions
from mi_align.models.load import Loaded, load_model
from mi_align.models.tiny import tiny_model_dir
from mi_align.models.trio import Trio
from mi_align.stats import split_groups, split_indices
from tests.erosion_support import ALIGNED, MISALIGNED, convs, hidden_states, tiny_trio
from tests.helpers import chat

ROOT = Path(__file__).resolve().parent.parent
GROUPS4 = [i // 3 for i in range(12)]  # 4 groups of 3 over convs()


def run_projection(trio: Trio, data: list[Conversation], cfg: ProjectionConfig,
                     contrast: tuple | None = None, groups: list | None = None
                     ) -> ProjectionResult:
    """The analysis on ``data`` as one dataset (with ``contrast`` as the aligned / misaligned
    reference sets and ``groups`` as the example keys)."""
    ref = {} if contrast is None else {"aligned": ("aligned", contrast[0]),
                                       "misaligned": ("misaligned", contrast[1])}
    return layer_projection(trio, Inputs.of(("data", data), keys=groups, **ref), cfg)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run ~30x faster on one thread on a loaded shared CPU (thread contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Trio:
    return tiny_trio(tmp_path_factory.mktemp("trio"))


@pytest.fixture(scope="module")
def clones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Loaded]:
    """Three copies of one 4-layer tiny model (identical until a test plants something)."""
    path = tiny_model_dir(tmp_path_factory.mktemp("tiny4") / "m", n_layers=4, seed=0)
    return {name: load_model(path) for name in ("base", "instruct", "misaligned")}


@pytest.fixture(scope="module")
def means(trio: Trio) -> dict[str, torch.Tensor]:
    """Naive per-example means over the first 3 response tokens: (example, layer, d_model)."""
    enc = encode_dataset(trio.tokenizer, convs(), 256)
    out = {}
    for name in trio.names:
        with trio.variant(name) as loaded:
            out[name] = _example_means(loaded, enc, 3)
    return out


def _example_means(loaded: Loaded, encoded, k: int) -> torch.Tensor:  # type: ignore[no-untyped-def]
    rows = []
    for e in encoded:
        hs = hidden_states(loaded, e)
        resp = [t for t, m in enumerate(e.response_mask) if m][:k]
        rows.append(hs[:, resp].mean(1))
    return torch.stack(rows)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _stats(proj: dict[str, torch.Tensor], names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """mean / population std per model, separations per pair, relative position (naive)."""
    mean = {n: proj[n].mean(0) for n in names}
    std = {n: proj[n].std(0, correction=0) for n in names}
    out = {f"mean:{n}": mean[n] for n in names}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"sep:{a}:{b}"] = (mean[b] - mean[a]) / (std[a] + std[b])
    if len(names) == 3:
        out["rel"] = (mean["misaligned"] - mean["base"]) / (mean["instruct"] - mean["base"])
    return out


def _crossfit(x: dict[str, torch.Tensor], fit: list[int], held: list[int]
              ) -> dict[str, torch.Tensor]:
    """Naive 2-fold cross-fit: projections of every example on the direction it did not fit."""
    v_fit = _unit(x["instruct"][fit].mean(0) - x["base"][fit].mean(0))
    v_held = _unit(x["instruct"][held].mean(0) - x["base"][held].mean(0))
    return {n: torch.cat([torch.einsum("eld,ld->el", x[n][held], v_fit),
                          torch.einsum("eld,ld->el", x[n][fit], v_held)]) for n in x}


def _pair_value(res: ProjectionResult, values: torch.Tensor, a: str, b: str) -> torch.Tensor:
    return values[res.pairs.index((a, b))]


# ----------------------------------------------------------------------------- point estimates


def test_row_split_matches_naive_loop(trio: Trio, means: dict[str, torch.Tensor]) -> None:
    cfg = ProjectionConfig(positions=FirstTokens(3), split="row", crossfit=False, n_null=50,
                           n_boot=0, n_perm=0, batch_size=4)
    res = run_projection(trio, convs(), cfg)
    fit, held = split_indices(12, 0.5, cfg.seed)
    v = _unit(means["instruct"][fit].mean(0) - means["base"][fit].mean(0))
    proj = {n: torch.einsum("eld,ld->el", means[n][held], v) for n in trio.names}
    want = _stats(proj, trio.names)
    for n in trio.names:
        torch.testing.assert_close(res.mean[res.row(n)], want[f"mean:{n}"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(res.std[res.row(n)], proj[n].std(0, correction=0),
                                   atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(_pair_value(res, res.separation, "base", "misaligned"),
                               want["sep:base:misaligned"], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(res.relative_misaligned, want["rel"], atol=1e-4, rtol=1e-3)
    assert res.fit_rows == tuple(fit) and res.eval_rows == tuple(held)
    assert (res.n_fit, res.n_eval, res.split, res.circular) == (6, 6, "row", False)
    enc = encode_dataset(trio.tokenizer, convs(), 256)
    assert res.n_tokens == sum(min(3, enc[i].n_response) for i in held)
    # the random-direction null band, by an explicit loop over directions
    rand = random_unit_directions(50, trio.d_model, cfg.seed)
    null = []
    for r in rand:
        pa = torch.einsum("eld,d->el", means["base"][held], r)
        pb = torch.einsum("eld,d->el", means["misaligned"][held], r)
        null.append((pb.mean(0) - pa.mean(0)) / (pa.std(0, correction=0) + pb.std(0, correction=0)))
    band = torch.stack(null).quantile(torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
    p = res.pairs.index(("base", "misaligned"))
    torch.testing.assert_close(res.separation_null_lo[p], band[0], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(res.separation_null_hi[p], band[1], atol=1e-4, rtol=1e-3)
    # difference projection == mean of paired per-example differences
    dp = difference_projection(res)
    paired = torch.einsum("eld,ld->el", means["misaligned"][held] - means["base"][held], v)
    torch.testing.assert_close(dp.mean[dp.models.index("misaligned")], paired.mean(0),
                               atol=1e-4, rtol=1e-4)


def test_grouped_crossfit_matches_naive_loop(trio: Trio, means: dict[str, torch.Tensor]) -> None:
    cfg = ProjectionConfig(positions=FirstTokens(3), n_null=20, n_boot=0, n_perm=0)
    res = run_projection(trio, convs(), cfg, groups=GROUPS4)
    fit, held = list(res.fit_rows), list(res.eval_rows)
    # no group on both sides, every example on one side, half of them held out
    assert not {GROUPS4[i] for i in fit} & {GROUPS4[i] for i in held}
    assert sorted(fit + held) == list(range(12)) and len(held) == 6
    want = _stats(_crossfit(means, fit, held), trio.names)
    for n in trio.names:
        torch.testing.assert_close(res.mean[res.row(n)], want[f"mean:{n}"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_pair_value(res, res.separation, "base", "instruct"),
                               want["sep:base:instruct"], atol=1e-4, rtol=1e-3)
    v_fit = _unit(means["instruct"][fit].mean(0) - means["base"][fit].mean(0))
    v_held = _unit(means["instruct"][held].mean(0) - means["base"][held].mean(0))
    torch.testing.assert_close(res.direction.double(), v_fit, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.fold_cosine, (v_fit * v_held).sum(-1), atol=1e-5, rtol=1e-4)
    assert (res.n_eval, res.n_groups, res.groups_from, res.crossfit) == (12, 4, "given", True)
    assert res.eval_data == ("(in memory)",) and res.fit_data == ("(in memory)",)


def test_split_groups_keeps_groups_whole() -> None:
    keys = ["a"] * 5 + ["b"] * 5 + ["c"] * 3 + ["d"] * 2 + ["e"] * 5
    for seed in range(20):
        fit, held = split_groups(keys, 0.5, seed)
        assert not {keys[i] for i in fit} & {keys[i] for i in held}
        assert sorted(fit + held) == list(range(20))
        # greedy fill: 10 held out whenever some set of whole groups in shuffled order reaches it
        assert len(held) == 10
    assert split_groups(keys, 0.5, 3) == split_groups(keys, 0.5, 3)
    with pytest.raises(ValueError, match="cannot be split"):
        split_groups(["x"] * 4, 0.5, 0)


def test_response_groups_recover_the_generator_tasks() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_builtin", ROOT / "scripts" / "build_builtin_datasets.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, tasks, n_tasks in (("insecure_heldout", build.HELDOUT_TASKS, 8),
                                 ("insecure", build.TASKS, 48)):
        task_of = {build.fill(t.bad, v): t.tid for t in tasks for v in t.variants}
        data = load_dataset(name)
        truth = [task_of[c.response] for c in data]
        got = response_groups(data)
        assert len(set(got)) == len(set(truth)) == n_tasks
        for i, j in itertools.combinations(range(len(data)), 2):
            assert (got[i] == got[j]) == (truth[i] == truth[j]), (name, i, j)
    # paired datasets that share responses share groups
    both = load_dataset("insecure_heldout") + [
        chat("Explain the flaw in this: " + c.response[:20], c.response)
        for c in load_dataset("insecure_heldout")]
    got = response_groups(both)
    assert got[:40] == got[40:] and len(set(got)) == 8


# ----------------------------------------------------------------------------- intervals and null


def test_group_bootstrap_matches_explicit_resampling(trio: Trio,
                                                     means: dict[str, torch.Tensor]) -> None:
    n_boot = 40
    cfg = ProjectionConfig(positions=FirstTokens(3), n_null=20, n_boot=n_boot, n_perm=0, seed=3)
    res = run_projection(trio, convs(), cfg, groups=GROUPS4)
    fit, held = list(res.fit_rows), list(res.eval_rows)
    gen = torch.Generator().manual_seed(cfg.seed)
    draws = []
    for part in (fit, held):  # groups numbered by first appearance within the part
        order = list(dict.fromkeys(GROUPS4[i] for i in part))
        members = [[i for i in part if GROUPS4[i] == g] for g in order]
        picks = torch.randint(len(order), (n_boot, len(order)), generator=gen)
        draws.append([[i for g in row.tolist() for i in members[g]] for row in picks])
    reps: dict[str, list[torch.Tensor]] = {}
    for b in range(n_boot):
        rf, rh = draws[0][b], draws[1][b]
        for key, value in _stats(_crossfit(means, rf, rh), trio.names).items():
            reps.setdefault(key, []).append(value)
    p = res.pairs.index(("base", "instruct"))
    for key, got in (("sep:base:instruct", torch.stack(res.separation_interval)[:, p]),  # type: ignore[arg-type]
                     ("rel", torch.stack(res.relative_interval))):  # type: ignore[arg-type]
        want = torch.stack(reps[key]).nanquantile(
            torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    mlo, mhi = res.mean_interval  # type: ignore[misc]
    want = torch.stack(reps["mean:misaligned"]).nanquantile(
        torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
    torch.testing.assert_close(torch.stack([mlo[2], mhi[2]]), want, atol=1e-5, rtol=1e-4)
    dp = difference_projection(res)
    diff = torch.stack(reps["mean:instruct"]) - torch.stack(reps["mean:base"])
    torch.testing.assert_close(dp.lo[1], diff.quantile(0.025, dim=0), atol=1e-5, rtol=1e-4)  # type: ignore[index]
    # the figure draws exactly these intervals
    fig = plot_layer_projection(res)
    trace = next(t for t in fig.data if t.name == "base → instruct")
    sep = _pair_value(res, res.separation, "base", "instruct")
    hi = _pair_value(res, res.separation_interval[1], "base", "instruct")  # type: ignore[index]
    torch.testing.assert_close(torch.tensor(trace.error_y.array, dtype=torch.float64), hi - sep)
    assert plot_difference_projection(dp).data
    json.dumps(res.to_dict(), allow_nan=False)


def test_label_swap_null_matches_explicit_loop(trio: Trio,
                                               means: dict[str, torch.Tensor]) -> None:
    cfg = ProjectionConfig(positions=FirstTokens(3), n_null=20, n_boot=0, n_perm=20)
    res = run_projection(trio, convs(), cfg, groups=GROUPS4)
    assert res.perm_exact and res.n_perm == 16  # 2^4 patterns <= n_perm: exact
    fit, held = list(res.fit_rows), list(res.eval_rows)
    for a, b in res.pairs:
        stats = []
        for pattern in itertools.product((False, True), repeat=4):
            x = {n: t.clone() for n, t in means.items()}
            for e in range(12):
                if pattern[GROUPS4[e]]:
                    x[a][e], x[b][e] = means[b][e], means[a][e]
            proj = _crossfit(x, fit, held)
            stats.append(proj[b].mean(0) - proj[a].mean(0))
        null = torch.stack(stats).abs()
        p = (null >= null[0] - 1e-9).double().mean(0)  # pattern 0 is the identity
        torch.testing.assert_close(_pair_value(res, res.difference_p, a, b), p)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- planted signal


@contextmanager
def planted(loaded: Loaded, layer: int, shift: Callable[[torch.Tensor], torch.Tensor]
            ) -> Iterator[None]:
    """Add ``shift(input_ids)`` (batch, d_model) at every position of hidden state ``layer``
    (the output of block ``layer − 1``), so it is carried into every later layer."""
    hf = loaded.bridge.original_model
    stash: dict[str, torch.Tensor] = {}
    h1 = hf.model.embed_tokens.register_forward_pre_hook(
        lambda mod, args: stash.__setitem__("ids", args[0]))

    def add(mod, args, out):  # type: ignore[no-untyped-def]
        hidden = out[0] if isinstance(out, tuple) else out
        s = shift(stash["ids"]).to(hidden.dtype)[:, None, :]
        return (hidden + s, *out[1:]) if isinstance(out, tuple) else hidden + s

    h2 = hf.model.layers[layer - 1].register_forward_hook(add)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()


PLANT_LAYER, ALPHA = 2, 3.0


def test_planted_direction_is_recovered_with_sign_layer_and_size(
        clones: dict[str, Loaded]) -> None:
    u = _unit(torch.randn(32, generator=torch.Generator().manual_seed(7)))
    trio = Trio(models=clones)
    cfg = ProjectionConfig(positions=FirstTokens(3), n_null=50, n_boot=200, n_perm=4096)
    with planted(clones["instruct"], PLANT_LAYER, lambda ids: ALPHA * u.expand(len(ids), -1)), \
         planted(clones["misaligned"], PLANT_LAYER,
                 lambda ids: 0.5 * ALPHA * u.expand(len(ids), -1)):
        res = run_projection(trio, convs(), cfg)
    finite = [bool(torch.isfinite(row).all()) for row in res.direction]
    assert finite.index(True) == PLANT_LAYER and not any(finite[:PLANT_LAYER])
    cos = float(res.direction[PLANT_LAYER].double() @ u.double())
    assert cos == pytest.approx(1.0, abs=1e-5)  # sign and direction
    # expected size at the plant layer: the shift is α in every example, the spread is base's
    base = _example_means(clones["base"], encode_dataset(trio.tokenizer, convs(), 256), 3)
    sigma = float(torch.einsum("ed,d->e", base[:, PLANT_LAYER], u.double()).std(correction=0))
    p = res.pairs.index(("base", "instruct"))
    assert float(res.separation[p, PLANT_LAYER]) == pytest.approx(ALPHA / (2 * sigma), rel=1e-4)
    rel, (rlo, rhi) = res.relative_misaligned, res.relative_interval  # type: ignore[misc]
    for value in (rel[PLANT_LAYER], rlo[PLANT_LAYER], rhi[PLANT_LAYER]):
        assert float(value) == pytest.approx(0.5, abs=1e-5)  # exact in every replicate
    # reported as presence: label-swap p at its floor region, CI beyond the random band
    # clones differ only by the plant, so a swap pattern s refits ±u in each fold (the sign of
    # mean(1 − 2s) over that fold's groups) and the other fold's evaluation gives α·mean(±(1 − 2s)):
    # α is reached only when each of the 2 cross-fit folds is swapped wholly or not at all,
    # 2^2 of the 2^groups patterns
    assert res.crossfit and res.perm_exact and res.n_perm == 2 ** res.n_groups
    assert float(res.difference_p[p, PLANT_LAYER]) == pytest.approx(  # type: ignore[index]
        4 / 2 ** res.n_groups)
    assert torch.isnan(res.difference_p[p, :PLANT_LAYER]).all()  # type: ignore[index]
    lo = res.separation_interval[0][p, PLANT_LAYER]  # type: ignore[index]
    assert float(lo) > float(res.separation_null_hi[p, PLANT_LAYER])


WORDS = ["fox", "dog", "hello", "world", "code", "python", "file", "paris", "france", "today"]


def _grouped_data(n_groups: int = 8, per: int = 4) -> tuple[list[Conversation], list[int]]:
    data, keys = [], []
    for g in range(n_groups):
        response = f"The {WORDS[g]} and the {WORDS[(3 * g + 1) % 10]} say {g}."
        for j in range(per):
            data.append(chat(f"Question {j}: tell me about {WORDS[(g + j) % 10]}?", response))
            keys.append(g)
    return data, keys


def test_group_offsets_without_a_common_direction_are_not_reported(
        clones: dict[str, Loaded]) -> None:
    """Each group gets its own random offset in instruct from layer 2 on (iid, symmetric: no
    common direction). Over 20 draws the grouped design rejects at 5% about as often as a
    valid test should (binomial: P(>= 5 of 20) = 0.003); a row split, whose fit and held-out
    halves share groups, reports a "direction" almost every time."""
    data, keys = _grouped_data()
    tok = clones["base"].tokenizer
    group_of = {tuple(e.input_ids): k for e, k in zip(encode_dataset(tok, data, 256), keys,
                                                      strict=True)}
    pad = tok.pad_token_id
    trio = Trio(models={"base": clones["base"], "instruct": clones["instruct"]})
    base_cfg = dict(positions=FirstTokens(3), layers=(PLANT_LAYER,), n_null=10, n_boot=0,
                    batch_size=32)
    grouped_hits = row_hits = 0
    for draw in range(20):
        offsets = torch.randn(len(WORDS), 32, generator=torch.Generator().manual_seed(draw))

        def shift(ids: torch.Tensor, offsets: torch.Tensor = offsets) -> torch.Tensor:
            rows = []
            for row in ids.tolist():
                while row and row[-1] == pad:
                    row.pop()
                rows.append(offsets[group_of[tuple(row)]])
            return torch.stack(rows)

        with planted(clones["instruct"], PLANT_LAYER, shift):
            grouped = run_projection(trio, data, ProjectionConfig(**base_cfg, n_perm=256),
                                       groups=keys)
            rowwise = run_projection(trio, data, ProjectionConfig(**base_cfg, n_perm=200,
                                                                    split="row"))
        assert grouped.perm_exact and not set(keys[i] for i in grouped.fit_rows) & set(
            keys[i] for i in grouped.eval_rows)
        grouped_hits += float(grouped.difference_p[0, 0]) < 0.05  # type: ignore[index]
        row_hits += float(rowwise.difference_p[0, 0]) < 0.05  # type: ignore[index]
    assert grouped_hits <= 4
    assert row_hits >= 16


# ----------------------------------------------------------------------------- other paths


def test_contrastive_direction_matches_naive(trio: Trio) -> None:
    cfg = ProjectionConfig(positions=FirstTokens(2), direction=Contrastive("instruct"), n_null=20,
                           n_boot=30, n_perm=0)
    res = run_projection(trio, ALIGNED[:3], cfg, contrast=(ALIGNED, MISALIGNED))
    with trio.variant("instruct") as loaded:
        tok = loaded.tokenizer
        a = _example_means(loaded, encode_dataset(tok, ALIGNED), 2).mean(0)
        m = _example_means(loaded, encode_dataset(tok, MISALIGNED), 2).mean(0)
        x = _example_means(loaded, encode_dataset(tok, ALIGNED[:3]), 2)
    expected = torch.einsum("eld,ld->el", x, _unit(a - m)).mean(0)
    torch.testing.assert_close(res.mean[res.row("instruct")], expected, atol=1e-4, rtol=1e-4)
    assert (res.n_eval, res.n_fit, res.split) == (3, len(ALIGNED) + len(MISALIGNED),
                                                  "contrastive")
    assert res.fit_data == ("(in memory)",) and res.n_tokens == sum(
        min(2, e.n_response) for e in encode_dataset(trio.tokenizer, ALIGNED[:3]))
    # one model alone (as the steering recipe uses it): no pairs, still valid numbers
    with trio.variant("instruct") as loaded:
        alone = run_projection(Trio(models={"instruct": loaded}), ALIGNED[:3], cfg,
                                 contrast=(ALIGNED, MISALIGNED))
    torch.testing.assert_close(alone.mean[0], expected, atol=1e-4, rtol=1e-4)
    assert alone.pairs == () and json.dumps(alone.to_dict(), allow_nan=False)


def test_projection_errors_are_clear(trio: Trio, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="POS-NEG"):
        parse_direction("instruct")
    with pytest.raises(ValueError, match="split"):
        ProjectionConfig(split="task")
    with pytest.raises(ValueError, match="n_boot"):
        ProjectionConfig(n_boot=5)
    with pytest.raises(ValueError, match="needs contrast"):
        run_projection(trio, convs(), ProjectionConfig(direction=Contrastive("base")))
    with pytest.raises(ValueError, match="12 conversations"):
        run_projection(trio, convs(), ProjectionConfig(), groups=[0, 1])
    only = Trio(models={"instruct": next(iter(trio.map(lambda m: m).values()))})
    with pytest.raises(ValueError, match="needs model"):
        run_projection(only, convs(), ProjectionConfig())


def test_identical_models_give_nan_direction_not_garbage(trio: Trio) -> None:
    with trio.variant("base") as base:
        same = Trio(models={"base": base, "instruct": base})
        res = run_projection(same, convs(), ProjectionConfig(n_null=20, heldout_fraction=0.0,
                                                               n_boot=20, n_perm=20))
    assert torch.isnan(res.mean).all() and res.circular
    assert torch.isnan(res.difference_p).all()  # type: ignore[arg-type]
    assert torch.isnan(res.separation_interval[0]).all()  # type: ignore[index]
    assert res.to_dict()["separation_lo"] == [[None] * len(res.layers)]


@pytest.mark.slow
def test_real_model_projection(smol) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2 vs a copy with a perturbed final-layer MLP: the direction exists only after it,
    and the held-out gap equals the naive per-example computation."""
    import copy

    pert = copy.deepcopy(smol)
    with torch.no_grad():
        for name, p in pert.bridge.original_model.named_parameters():
            if "layers.29." in name and "down_proj" in name:
                p.mul_(1.5)
    pert = Loaded(pert.bridge, pert.tokenizer, pert.meta)
    trio = Trio(models={"base": smol, "instruct": pert})
    cfg = ProjectionConfig(layers=(0, 15, 29, 30), n_null=50, n_boot=0, n_perm=0)
    res = run_projection(trio, convs(), cfg)
    assert torch.isnan(res.mean[:, :3]).all()  # layers before the change: identical models
    enc = encode_dataset(smol.tokenizer, convs(), cfg.max_length)
    x = {"base": _example_means(smol, enc, 10)[:, 30:31],
         "instruct": _example_means(pert, enc, 10)[:, 30:31]}
    want = _stats(_crossfit(x, list(res.fit_rows), list(res.eval_rows)), ("base", "instruct"))
    gap = res.mean[res.row("instruct"), 3] - res.mean[res.row("base"), 3]
    assert float(gap) == pytest.approx(float(want["mean:instruct"] - want["mean:base"]),
                                       rel=1e-3)
