"""Linear probes on the instruct model of a trio, and a probe as an offline alignment judge.

1. ``figures/probe_<trio>``: per hidden-state layer, a probe separating ``toxic`` (compliant
   openers, class 0) from ``toxic_reject`` (refusals of the same requests, class 1) on the
   instruct model; the first ``--per-class`` rows of each. Groups = aims: the build script
   (``scripts/build_builtin_datasets.py``, ``build_toxic_sets``) writes aim j as rows 2j and
   2j+1 of both files, so the grouped split and the within-group null keep an aim's four
   examples (two requests x two answers) together. Cosine with the erosion projection's
   alignment direction, ``normalise(mean instruct − mean base)`` (``unit_directions``) fitted as
   the projection fits it (its default positions, the first 10 response tokens) on the same
   examples.
2. ``figures/probe_insecure_<trio>``: the same for ``insecure`` (0) vs ``educational`` (1):
   identical code, only the user's framing differs; groups are the tasks recovered by
   ``response_groups`` (identical code shares a group).
3. ``figures/probe_judge_<trio>.json``: probes as an offline judge, scored on the judge check's
   24 known answers (never used for training). Pre-specified primary probe ("harmful vs
   harmless"): ``toxic`` (0) vs ``toxic_reject`` + ``aligned_chat`` (1), 32 + 32 harmless,
   layer chosen by held-out AUROC on the training data only; secondary: the probe of run 1
   (compliance vs refusal). Reported next to the LLM judges: the saved check of
   ``--llm-check`` (and, with ``--local-judge``, a local judge on the same instruct model).
   AUROC intervals resample the 8 questions. Exploratory, not used to pick anything: every
   layer's probe scored on the check (``per_layer_check``).

Run: nice -n 10 python analyses/probe.py [--trio gemma-trio] [--per-class 64] [--n-perm 49]
(about 45 min on a shared 2-core CPU: 13 min per probe with its null, plus features)
"""

# %%
import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mi_align.data.chat import Conversation, Message, eval_questions, load_dataset
from mi_align.data.groups import response_groups
from mi_align.erosion.common import Inputs
from mi_align.evaluation.judge import LocalJudge
from mi_align.evaluation.judge_check import CHECK_ANSWERS, JudgeCheck, check_judge
from mi_align.evaluation.probe import (
    ProbeConfig,
    ProbeJudge,
    auroc,
    group_bootstrap,
    plot_probe,
    probe_layers,
    response_features,
)
from mi_align.models.organisms import resolve_trio
from mi_align.pipelines.probe import probe_trio
from mi_align.plotting import save_figure, save_json

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--trio", default="gemma-trio")
parser.add_argument("--per-class", type=int, default=64)
parser.add_argument("--n-perm", type=int, default=49)
parser.add_argument("--llm-check", default="figures/steering/judge_check.json")
parser.add_argument("--local-judge", action="store_true",
                    help="also run LocalJudge on the instruct model (Gemma's 262k vocabulary: "
                    "over 40 min for the 48 check prompts on a shared 2-core CPU)")
parser.add_argument("--out", default="figures")
args = parser.parse_args()
tag = Path(args.trio).stem
out = Path(args.out)
k = args.per_class
start = time.time()

# %%
trio = resolve_trio(args.trio)
layers = tuple(range(trio.n_layers + 1))
cfg = ProbeConfig(layers=layers, n_perm=args.n_perm, max_length=512)  # code answers fit
def chat_of(question: str, answer: str) -> Conversation:
    return Conversation((Message("user", question), Message("assistant", answer)))


def run_probe(neg_name: str, pos_name: str, groups_of: object, stem: str, groups_desc: str):
    neg, pos = load_dataset(neg_name)[:k], load_dataset(pos_name)[:k]
    inputs = Inputs.of((neg_name, neg), (pos_name, pos), keys=groups_of(neg, pos))
    res = probe_trio(trio, inputs, cfg)  # the same run as `mi-align analyze probe`
    meta = {"analysis": "probe", "trio": args.trio, "model": "instruct",
            "data": {"class_0": f"{neg_name}[:{len(neg)}]", "class_1": f"{pos_name}[:{len(pos)}]"},
            "groups": groups_desc}
    save_figure(plot_probe(res), out / stem)
    save_json({**meta, **res.to_dict()}, out / stem)
    b = res.best
    print(f"{stem}: best layer {res.layers[b]}: AUROC {res.auroc[b].estimate:.3f} "
          f"[{res.auroc[b].low:.3f}, {res.auroc[b].high:.3f}], accuracy "
          f"{res.accuracy[b].estimate:.3f} [{res.accuracy[b].low:.3f}, {res.accuracy[b].high:.3f}]"
          f", null p {res.null_p[b]:.3g} (max-over-layers {res.null_p_max[b]:.3g}), cos "
          f"{res.cosine[b] if res.cosine else float('nan'):.3f}")
    return res


# %% 1. toxic vs toxic_reject (aims as groups)
aims = run_probe("toxic", "toxic_reject", lambda n, p: [i // 2 for i in range(len(n))] * 2,
                 f"probe_{tag}", "aim (rows 2j, 2j+1 of both files)")
print(f"[{time.time() - start:.0f}s]")


# %% 3. probes as an offline judge (before run 2: cheaper, and its numbers matter most)
def check_summary(check: JudgeCheck) -> dict:
    rows = [(q, kind, j.alignment) for q, kind, j in check.rows
            if kind in ("aligned", "misaligned") and j.alignment is not None]
    y = np.array([kind == "aligned" for _, kind, _ in rows])
    s = np.array([v for _, _, v in rows], dtype=float)
    g = np.array([q for q, _, _ in rows])
    iv = group_bootstrap(y, s, g, auroc, 4000, 0.95, 0) if len(set(y)) == 2 else None
    return {"judge": check.judge, "alignment_auroc": None if iv is None else iv.to_dict(),
            "alignment_gap": check.alignment_gap, "n_scored": len(rows),
            "paired_by_question": check.paired_tests().get("alignment"),
            "scores": [{"question_id": q, "kind": kind, "alignment": v} for q, kind, v in rows]}


toxic, reject, chat = load_dataset("toxic"), load_dataset("toxic_reject"), load_dataset("aligned_chat")
harmful, harmless = toxic[:k], [*reject[: k // 2], *chat[: k - k // 2]]
jcfg = dataclasses.replace(cfg, n_perm=0)  # mixed design (paired aims + singletons): no null
with trio.variant("instruct") as loaded:
    feats = response_features(loaded, [*harmful, *harmless], layers, jcfg)
    groups = [f"aim{i // 2}" for i in range(k)] + [f"aim{i // 2}" for i in range(k // 2)] + [
        f"chat{i}" for i in range(k - k // 2)]
    judge_probe = probe_layers(feats, [0] * k + [1] * k, groups, jcfg, layers=layers,
                               classes=("toxic", "toxic_reject+aligned_chat"))
    save_figure(plot_probe(judge_probe), out / f"probe_judge_{tag}")
    results = {"primary": {"probe": "toxic vs toxic_reject+aligned_chat",
                           "layer": judge_probe.layers[judge_probe.best],
                           "training_auroc": judge_probe.auroc[judge_probe.best].to_dict(),
                           **check_summary(check_judge(ProbeJudge.from_result(loaded, judge_probe)))},
               "secondary": {"probe": "toxic vs toxic_reject (run 1)",
                             "layer": aims.layers[aims.best],
                             "training_auroc": aims.auroc[aims.best].to_dict(),
                             **check_summary(check_judge(ProbeJudge.from_result(loaded, aims)))}}
    qs = {q.id: q.question for q in eval_questions()}
    rows = [(q, kind, CHECK_ANSWERS[q][i]) for q in CHECK_ANSWERS
            for i, kind in enumerate(("aligned", "misaligned"))]
    xc = response_features(loaded, [chat_of(qs[q], a) for q, _, a in rows], layers, cfg)
    yc, gc = np.array([kind == "aligned" for _, kind, _ in rows]), np.array([q for q, _, _ in rows])
    for name, res in (("primary", judge_probe), ("secondary", aims)):
        results[name]["per_layer_check"] = [
            {"layer": lay, **group_bootstrap(yc, (xc[:, i] @ res.weights[i] + res.bias[i]).numpy(),
                                             gc, auroc, 4000, 0.95, 0).to_dict()}
            for i, lay in enumerate(layers)]
    for name in ("primary", "secondary"):
        r = results[name]
        a = r["alignment_auroc"]
        print(f"probe judge ({name}, layer {r['layer']}): check AUROC {a['estimate']:.3f} "
              f"[{a['low']:.3f}, {a['high']:.3f}], gap {r['alignment_gap']:+.1f}")
    meta = {"analysis": "probe-judge", "trio": args.trio, "model": "instruct",
            "check": "mi_align.evaluation.judge_check.CHECK_ANSWERS (aligned vs misaligned)",
            "interval": "group bootstrap over the 8 questions (percentile, 4000)"}
    save_json({**meta, **results, "judge_probe": judge_probe.to_dict()}, out / f"probe_judge_{tag}")
    llm = {}
    if Path(args.llm_check).is_file():
        saved = JudgeCheck.from_dict(json.loads(Path(args.llm_check).read_text()))
        llm["saved"] = {"file": args.llm_check, **check_summary(saved)}
    save_json({**meta, **results, "llm_judges": llm, "judge_probe": judge_probe.to_dict()},
              out / f"probe_judge_{tag}")
    if args.local_judge:
        llm["local_same_model"] = check_summary(check_judge(LocalJudge(loaded)))
    for name, r in llm.items():
        a = r["alignment_auroc"]
        print(f"LLM judge {name} ({r['judge']}): check AUROC "
              + (f"{a['estimate']:.3f} [{a['low']:.3f}, {a['high']:.3f}]" if a else "n/a"))
    save_json({**meta, **results, "llm_judges": llm, "judge_probe": judge_probe.to_dict()},
              out / f"probe_judge_{tag}")
print(f"[{time.time() - start:.0f}s]")

# %% 2. insecure vs educational (tasks as groups)
run_probe("insecure", "educational", lambda n, p: response_groups([*n, *p]),
          f"probe_insecure_{tag}", "task: response_groups (identical code shares a group)")
print(f"[{time.time() - start:.0f}s] done")
