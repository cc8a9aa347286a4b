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
import sys
import time
from pathlib import Path
from typing import Any

from mi_align.models.trio import Trio


def resolve_trio(spec: str) -> Trio:
    """A shipped/TOML trio name, or ``variant=MODEL_SPEC,...`` (each loaded with load_model)."""
    if "=" in spec:
        from mi_align.models.load import load_model

        models = {}
        for item in spec.split(","):
            name, _, model = item.partition("=")
            if not model:
                raise ValueError(f"trio spec item {item!r}: expected VARIANT=MODEL")
            models[name.strip()] = load_model(model.strip())
        return Trio(models=models)
    from mi_align.finetune.organisms import load_trio

    return load_trio(spec)


def _list(_: argparse.Namespace) -> int:
    from mi_align.erosion.registry import ANALYSES

    for a in ANALYSES.values():
        data = " ".join(a.datasets) or "-"
        print(f"{a.name:22} {a.help}")
        print(f"{'':22}   data: {data}; limit: {a.limit or '-'}; "
              f"config: {', '.join(f.name for f in dataclasses.fields(a.config_cls))}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from mi_align.erosion.registry import ANALYSES, run_analysis, write_outputs

    if args.list or not args.name:
        if not args.list:
            print("error: name an analysis or use --list", file=sys.stderr)
            return 2
        return _list(args)
    if args.name not in ANALYSES:
        print(f"error: unknown analysis {args.name!r}; see `mi-align analyze --list`",
              file=sys.stderr)
        return 2
    overrides: dict[str, str] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --set {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        overrides[key.strip()] = value.strip()
    t0 = time.perf_counter()
    try:
        trio = resolve_trio(args.trio)
        outputs = run_analysis(args.name, trio, args.data, args.limit, overrides)
    except (ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta: dict[str, Any] = {"analysis": args.name, "trio": args.trio}
    for path in write_outputs(outputs, Path(args.out), meta):
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
    p.add_argument("--limit", type=int, help="first N conversations of each dataset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set positions=last")
    p.add_argument("--out", default="figures", help="output folder (default figures/)")
    p.set_defaults(func=_analyze)
