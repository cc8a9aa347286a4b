"""``mi-align analyze``: run one erosion analysis on a trio and write its figure and numbers.

Example:
    mi-align analyze --list
    mi-align analyze projection --trio gemma-trio --out figures
    mi-align analyze loss-vectors --trio gemma-trio --data insecure educational --limit 50
    mi-align analyze gradients --trio gemma-trio --set params=all --set sketch_dim=16384 \\
        --set exact_check=6
    mi-align analyze logprobs --trio base=path/to/a,instruct=path/to/b
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from mi_align.errors import InputError
from mi_align.models.trio import Trio


def _trio_items(spec: str) -> dict[str, str]:
    """``variant=MODEL_SPEC,...`` parsed and checked (no model loaded)."""
    items: dict[str, str] = {}
    for item in spec.split(","):
        name, _, model = item.partition("=")
        if not name.strip() or not model.strip():
            raise InputError(f"--trio item {item!r}", "expected VARIANT=MODEL",
                             "e.g. base=path/a,instruct=path/b")
        items[name.strip()] = model.strip()
    return items


def resolve_trio(spec: str) -> Trio:
    """A shipped/TOML trio name, or ``variant=MODEL_SPEC,...`` (each loaded with load_model)."""
    if "=" in spec:
        from mi_align.models.load import load_model

        items = _trio_items(spec)  # every item checked before the first model loads
        return Trio(models={name: load_model(model) for name, model in items.items()})
    from mi_align.finetune.organisms import load_trio

    return load_trio(spec)


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


def _list(_: argparse.Namespace) -> int:
    from mi_align.erosion.registry import ANALYSES

    for a in ANALYSES.values():
        data = " ".join(a.datasets) or "-"
        print(f"{a.name:22} {a.help}")
        print(f"{'':22}   data: {data}; limit: {a.limit or '-'}; "
              f"config: {', '.join(f.name for f in dataclasses.fields(a.config_cls))}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from mi_align.erosion.registry import check_models, plan_analysis, run_plan, write_outputs
    from mi_align.evaluation.run import check_out_dir

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
    # Everything that needs no model first: a typo in --set, --data or --out costs seconds.
    plan = plan_analysis(args.name, args.data, args.limit, overrides)
    if "=" in args.trio:
        check_models(plan, list(_trio_items(args.trio)))
    out_dir = check_out_dir(args.out)
    t0 = time.perf_counter()
    trio = resolve_trio(args.trio)
    outputs = run_plan(plan, trio)
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
    p.set_defaults(func=_analyze)
