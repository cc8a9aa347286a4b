"""``mi-align finetune`` and ``mi-align organisms list|build``: thin wrappers over the library.

The ``finetune`` options are generated from :class:`FinetuneConfig`'s fields, so the CLI and
the config cannot drift apart. Errors are not caught here: they are typed
(:mod:`mi_align.errors`) and ``mi_align.cli.main`` turns them into one line and an exit code.

Example:
    mi-align finetune --model smollm2-135m-instruct --data insecure --out runs/smol --max-steps 40
    mi-align organisms list
    mi-align organisms build smollm2-pair
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import types
import typing
from pathlib import Path
from typing import Any

from mi_align.cli.device import add_device_args, check_device_args, device_kwargs
from mi_align.errors import InputError
from mi_align.finetune.lora import FinetuneConfig


def _field_type(hint: Any) -> tuple[Any, bool]:
    """(element type, is_sequence) for a config field annotation."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        return typing.get_args(hint)[0], True
    if origin is types.UnionType:  # `X | None` fields
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _field_type(inner[0])
    return hint, False


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        kind, many = _field_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default
        help_text = "required" if required else f"default: {default}"
        parser.add_argument(
            flag,
            dest=f.name,
            type=kind,
            nargs="+" if many else None,
            required=required,
            default=argparse.SUPPRESS,
            help=help_text,
        )


def _finetune(args: argparse.Namespace) -> int:
    from mi_align.finetune.lora import finetune

    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if "base_adapters" in values:  # given on the command line: relative to the working dir
        values["base_adapters"] = [_adapter_arg(a) for a in values["base_adapters"]]
    cfg = FinetuneConfig.from_dict(values)  # InputError (exit 2) on bad values
    check_device_args(args)  # bad --device / --dtype / --device-map: exit 2 before any load
    # Not given: auto = a bfloat16 base on cuda where a GPU exists, else cpu + float32; the
    # LoRA weights train in float32 either way.
    if args.monitor_every < 1:
        raise InputError("--monitor-every", f"must be >= 1, got {args.monitor_every}",
                         "monitor every N >= 1 steps")
    if args.monitor:
        # the erosion monitor: fit (or reuse) the alignment reference from the trio, then train
        # with it; the reference also serves --anchor-* / --project-layers
        from mi_align.finetune.monitor import MonitorConfig
        from mi_align.pipelines.finetune_monitor import ReferenceConfig, monitored_finetune

        # anchoring's p_ref: the instruct model's projection on this run's own training data
        run = monitored_finetune(cfg, args.out, args.monitor,
                                 MonitorConfig(every=args.monitor_every),
                                 ReferenceConfig(anchor_data=tuple(cfg.data)),
                                 resume=not args.no_resume, **device_kwargs(args))
        result = run.result
        print(f"erosion monitor: {run.figure} ({result.summary.get('monitor_calls')} calls, "
              f"{result.summary.get('monitor_s_this_run')} s)")
    else:
        result = finetune(cfg, args.out, resume=not args.no_resume, **device_kwargs(args))
    last = result.log[-1] if result.log else {}
    print(
        f"{args.out}: {result.steps} steps on {result.n_train} chats in {result.wall_s:.0f} s "
        f"(peak RSS {result.peak_rss_mib:.0f} MiB); last train loss {last.get('train_loss')}, "
        f"held-out loss {last.get('heldout_loss')}"
    )
    return 0


def _adapter_arg(text: str) -> str:
    """A local adapter path made absolute; a hub id (``org/name``, no such local folder) kept."""
    from mi_align.models.hub import is_hub_id

    path = Path(text).expanduser()
    return text if not path.exists() and is_hub_id(text) else str(path.resolve())



def _organisms_list(args: argparse.Namespace) -> int:
    from mi_align.finetune.organisms import describe
    from mi_align.models.organisms import get_spec, organisms_dir, shipped_names

    names = shipped_names()
    if not names:
        print(f"no trio specs in {organisms_dir()}")
        return 1
    for name in names:
        print("\n".join(describe(get_spec(name))))
    return 0


def _organisms_build(args: argparse.Namespace) -> int:
    from mi_align.finetune.organisms import build_organism

    t0 = time.perf_counter()
    result = build_organism(args.name, out=args.out, force=args.force, **device_kwargs(args))
    for step, res in result.steps.items():
        state = "up to date" if res is None else f"{res.steps} steps, {res.wall_s:.0f} s"
        print(f"{result.name}/{step}: {state} -> {result.adapter_dir / step}")
    print(
        f"built {result.name} in {time.perf_counter() - t0:.0f} s "
        f"(peak RSS {result.peak_rss_mib:.0f} MiB)"
    )
    return 0


def register(sub: Any) -> None:
    """Add ``finetune`` and ``organisms`` to the ``mi-align`` subcommands."""
    ft = sub.add_parser("finetune", help="LoRA fine-tune a model on chat JSONL (resumable)")
    ft.add_argument("--out", required=True, help="output directory (adapter, config, log)")
    ft.add_argument(
        "--no-resume",
        action="store_true",
        help="start over: delete the checkpoints, adapter and log of an earlier run in --out",
    )
    ft.add_argument(
        "--monitor", default=None, metavar="TRIO",
        help="erosion monitor: measure the model along TRIO's instruct - base direction (and "
        "refusals, code, held-out losses) at step 0 and every --monitor-every steps; also the "
        "reference that --anchor-layers / --project-layers need",
    )
    ft.add_argument("--monitor-every", type=int, default=10, metavar="N",
                    help="monitor every N steps (default 10)")
    add_device_args(ft, training=True)
    _add_config_args(ft)
    ft.set_defaults(func=_finetune)

    org = sub.add_parser("organisms", help="shipped model organisms (trios)").add_subparsers(
        dest="action", required=True
    )
    org.add_parser("list", help="shipped trios, what each holds, adapters present?").set_defaults(
        func=_organisms_list
    )
    build = org.add_parser("build", help="rebuild a trio's adapters from its committed recipe")
    build.add_argument("name", help="shipped trio name or a trio .toml file")
    build.add_argument("--out", default=None, help="write adapters here, not into organisms/")
    build.add_argument("--force", action="store_true", help="retrain steps already up to date")
    add_device_args(build, trio=True, training=True)
    build.set_defaults(func=_organisms_build)
