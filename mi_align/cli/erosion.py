"""``mi-align analyze``: run one erosion analysis on a trio and write its figure and numbers.

Example:
    mi-align analyze --list
    mi-align analyze projection --trio gemma-trio --out figures
    mi-align analyze loss-vectors --trio gemma-trio --data insecure educational --limit 50
    mi-align analyze gradients --trio gemma-trio --set params=all --set sketch_dim=16384 \\
        --set exact_check=6
    mi-align analyze logprobs --trio base=path/to/a,instruct=path/to/b
    mi-align analyze projection --trio qwen-coder-32b-paper --device auto --device-map auto
    mi-align analyze gradients --trio gemma-trio --resume   # after an interruption

Long analyses (projection, loss-vectors, gradients, activation-similarity, svd) save their
per-example rows every --checkpoint-every examples under OUT/.checkpoints/; --resume continues
an interrupted run of the same command from them (same numbers as an uninterrupted run).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from mi_align.cli.device import add_device_args, check_device_args, device_kwargs
from mi_align.errors import InputError
from mi_align.models.organisms import resolve_trio, trio_items

CHECKPOINT_EVERY = 64


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--limit 0`` or ``-2`` would silently mean "all" or
    "all but the last two")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value} (omit it to use every "
                                         "example)")
    return value


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _list(_: argparse.Namespace) -> int:
    from mi_align.pipelines.erosion import ANALYSES

    for a in ANALYSES.values():
        data = " ".join(a.datasets) or "-"
        print(f"{a.name:22} {a.help}")
        print(f"{'':22}   data: {data}; limit: {a.limit or '-'}; "
              f"config: {', '.join(f.name for f in dataclasses.fields(a.config_cls))}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from mi_align.pipelines.erosion import (
        Checkpoints,
        check_models,
        plan_analysis,
        run_plan,
        write_outputs,
    )
    from mi_align.pipelines.steering_eval import check_out_dir

    if args.list:
        return _list(args)
    if not args.name:
        raise InputError("mi-align analyze", "no analysis named", "name one or use --list")
    overrides: dict[str, str] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {item!r}", "expected KEY=VALUE", "e.g. --set k=8")
        overrides[key.strip()] = value.strip()
    # Everything that needs no model first: a typo in --set, --data, --out or --device costs
    # seconds (the trio file's own device/dtype are checked when it is read, before any load).
    check_device_args(args)
    plan = plan_analysis(args.name, args.data, args.limit, overrides)
    if "=" in args.trio:
        check_models(plan, list(trio_items(args.trio)))
    out_dir = check_out_dir(args.out)
    if args.resume and not args.checkpoint_every:
        raise InputError("--resume", "needs checkpoints", "drop --checkpoint-every 0")
    checkpoints = Checkpoints(out_dir / ".checkpoints", args.checkpoint_every, args.resume,
                              args.trio) if args.checkpoint_every else None
    t0 = time.perf_counter()
    trio = resolve_trio(args.trio, **device_kwargs(args))
    outputs = run_plan(plan, trio, checkpoints)
    meta: dict[str, Any] = {"analysis": args.name, "trio": args.trio}
    for path in write_outputs(outputs, out_dir, meta):
        print(f"wrote {path} (+ .json)")
    print(f"{args.name} on {args.trio} ({', '.join(trio.names)}) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def register(sub: Any) -> None:
    """Add ``analyze`` to the ``mi-align`` subcommands."""
    p = sub.add_parser("analyze", help="erosion analyses (figures + numbers)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="analysis name (see --list)")
    p.add_argument("--list", action="store_true", help="list the analyses")
    p.add_argument("--trio", default="gemma-trio",
                   help="shipped trio name, or base=SPEC,instruct=SPEC,... (default gemma-trio)")
    p.add_argument("--data", nargs="+", help="dataset names or JSONL paths (default: per analysis)")
    p.add_argument("--limit", type=_positive_int,
                   help="first N (>= 1) conversations of each dataset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set positions=last")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run of the same command from its checkpoints")
    p.add_argument("--checkpoint-every", type=_non_negative_int, default=CHECKPOINT_EVERY,
                   metavar="N", help="save per-example rows every N examples (0: never; "
                   f"default {CHECKPOINT_EVERY})")
    add_device_args(p, trio=True)
    p.set_defaults(func=_analyze)
