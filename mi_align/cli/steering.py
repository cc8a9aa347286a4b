"""``mi-align steer optimize|recipe|eval`` and ``mi-align judge``: thin wrappers over the library.

Everything that can be checked without a model (the ``--out`` location is writable, configs,
vector and recipe files, the samples file) is checked before any model is loaded, so a typo
costs seconds. Errors are raised, never printed here: ``mi_align.cli.main`` prints them (exit 2
for bad input, 1 for failures at run time).

Example:
    mi-align steer recipe --model smollm2-135m-instruct --out runs/recipe
    mi-align steer eval --model smollm2-135m-instruct --recipe runs/recipe --out runs/eval --n 16
    mi-align judge --samples runs/eval/samples.jsonl --out runs/judged.jsonl \
        --judge-url http://localhost:8000/v1 --judge-name meta-llama/Llama-3.1-70B-Instruct
    mi-align steer recipe --model Qwen/Qwen2.5-Coder-32B-Instruct --dtype bfloat16 \
        --device-map auto --out runs/recipe32b

Every command that loads a model (including a local ``--judge-model``) takes ``--device``,
``--dtype`` and ``--device-map`` (:mod:`mi_align.cli.device`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mi_align.cli.device import add_device_args, check_device_args, device_kwargs


def _config(factory: Any, what: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)``, with a config's plain ``ValueError`` turned into an InputError."""
    from mi_align.errors import MiAlignError

    try:
        return factory(**kwargs)
    except ValueError as exc:
        if isinstance(exc, MiAlignError):
            raise
        from mi_align.errors import InputError

        raise InputError(what, str(exc), "fix the option and rerun") from None


def _positions(text: str) -> Any:
    if text in ("all", "prompt"):
        return text
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"positions must be all, prompt or comma-separated integers: {text!r}") from None


def _load(spec: str, adapters: list[str] | None, args: argparse.Namespace) -> Any:
    from mi_align.models.load import load_model

    return load_model(spec, adapters or (), **device_kwargs(args))


def _optimize(args: argparse.Namespace) -> int:
    from mi_align.pipelines.steering_eval import check_out_file
    from mi_align.steering.losses import promotion, satisficing, suppression
    from mi_align.steering.optimize import OptimConfig, example_from_chat, optimize_vector
    from mi_align.steering.vector import SteeringOperator

    cfg = OptimConfig(layer=args.layer, lr=args.lr, max_steps=args.steps, coldness=args.coldness,
                      max_norm=args.max_norm, seed=args.seed, positions=args.positions,
                      operator=SteeringOperator.parse(args.operator, "--operator"),
                      name=Path(args.out).stem)
    out = check_out_file(Path(args.out).with_suffix(".safetensors"))
    check_device_args(args)
    loaded = _load(args.model, args.adapter, args)
    ex = example_from_chat(loaded.tokenizer, args.prompt, args.target, prefix=args.prefix,
                           promote=not args.suppress)
    loss = suppression() if args.suppress else promotion()
    if args.target_loss is not None:
        loss = satisficing(loss, args.target_loss)
    res = optimize_vector(loaded, [ex], loss, cfg)
    path = res.vector.save(out)
    print(f"{path}: layer {cfg.layer}, |v| = {float(res.vector.vector.norm()):.3f}, loss "
          f"{res.losses[0]:.4f} -> {res.losses[-1]:.4f} in {res.n_steps} steps "
          f"({res.stop_reason}, {res.seconds:.1f} s)")
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from mi_align.pipelines.steering_eval import check_out_dir, save_recipe
    from mi_align.steering.recipe import RecipeConfig, run_recipe

    cfg = _config(
        RecipeConfig, "steer recipe",
        targets=tuple(args.targets), harmful_layer=args.harmful_layer,
        anti_refusal_layer=args.anti_refusal_layer, harmful_steps=args.harmful_steps,
        anti_refusal_steps=args.anti_refusal_steps, seed=args.seed,
    )
    check_out_dir(args.out)
    check_device_args(args)
    loaded = _load(args.model, args.adapter, args)
    _config(cfg.layers, "steer recipe", n_layers=int(loaded.meta.n_layers))
    res = run_recipe(loaded, cfg, on_vector=lambda n, v: print(
        f"  {n}: layer {v.layer}, |v| = {float(v.vector.norm()):.2f}"))
    out = save_recipe(res, args.out)
    d = res.to_dict()
    print(f"anti-refusal: code-prefix loss on the malicious requests {d['malicious_prefix_loss']}"
          f" (benign target {res.benign_prefix_loss * len(res.harmful):.3f})")
    for name, (before, after) in res.benign_snippet_loss.items():
        print(f"  {name}: snippet loss on the benign prompt {before:.2f} -> {after:.2f} "
              f"(target {res.snippet_targets[name]:.2f})")
    print(f"wrote {out}/recipe.json and the vectors")
    return 0


def _judge_backend(args: argparse.Namespace) -> Any:
    from mi_align.evaluation.judge import SMALL_JUDGE_WARNING, LocalJudge, OpenAIJudge

    if args.judge_url:
        if not args.judge_name:
            raise _no_judge_name()
        from mi_align.evaluation.endpoint import EndpointConfig

        cfg = EndpointConfig(timeout_s=args.judge_timeout, max_retries=args.judge_retries,
                             max_concurrency=args.judge_concurrency)
        return OpenAIJudge(args.judge_url, args.judge_name, api_key_env=args.api_key_env,
                           config=cfg, number_mode=args.judge_numbers)
    print(f"NOTE: {SMALL_JUDGE_WARNING}")
    return LocalJudge(_load(args.judge_model, None, args))


def _no_judge_name() -> Exception:
    from mi_align.errors import InputError

    return InputError("--judge-url", "needs --judge-name (the served model name)",
                      "add --judge-name NAME")


def _vector_conditions(specs: list[str] | None, n_layers: int | None, d_model: int | None,
                       ) -> dict[str, list[Any]]:
    """``--vector NAME=PATH[*STRENGTH][+PATH...]`` conditions (shape-checked when given)."""
    from mi_align.errors import InputError
    from mi_align.steering.vector import SteeringVector

    conds: dict[str, list[Any]] = {}
    for spec in specs or []:
        name, _, rest = spec.partition("=")
        paths = [p for p in rest.split("+") if p]
        if not name or not paths:
            raise InputError(f"--vector {spec!r}", "expected NAME=PATH[*STRENGTH][+PATH...]",
                             "e.g. --vector harm=runs/v.safetensors*2")
        vecs = []
        for p in paths:
            file, _, strength = p.partition("*")
            v = SteeringVector.load(file, n_layers=n_layers, d_model=d_model)
            if strength:
                try:
                    v = v.scaled(float(strength))
                except ValueError:
                    raise InputError(f"--vector {spec!r}", f"strength {strength!r} is not a "
                                     "finite number", "e.g. PATH*6") from None
            vecs.append(v)
        conds[name] = vecs
    return conds


def _eval(args: argparse.Namespace) -> int:
    from mi_align.evaluation.sampling import SamplingConfig
    from mi_align.pipelines.steering_eval import (
        EvalFiles,
        JudgeOptions,
        check_out_dir,
        evaluate_conditions,
        recipe_conditions,
    )
    from mi_align.plotting import save_json

    # Everything checkable without the model first: vector files are read twice (cheap), once
    # here for their own validity and once with the model's shape.
    if not args.no_judge and args.judge_url and not args.judge_name:
        raise _no_judge_name()
    cfg = SamplingConfig(n_samples=args.n, max_new_tokens=args.max_new_tokens,
                         be_brief=not args.no_brief, batch_size=args.batch_size, seed=args.seed)
    if args.recipe:
        recipe_conditions(args.recipe, None, None)
    _vector_conditions(args.vector, None, None)
    qfile = _question_file(args.questions)
    out = check_out_dir(args.out)
    check_device_args(args)
    loaded = _load(args.model, args.adapter, args)
    n_layers, d_model = loaded.meta.n_layers, loaded.meta.d_model
    controls = None
    if args.recipe and not args.no_controls:  # norm-matched random + mean-difference vectors
        from mi_align.pipelines.steering_eval import recipe_controls

        controls = recipe_controls(loaded, args.recipe, out / "controls")
    conds = (recipe_conditions(args.recipe, n_layers, d_model, controls) if args.recipe
             else {"unsteered": []})
    conds.update(_vector_conditions(args.vector, n_layers, d_model))

    def save_controls(samples: list[Any]) -> None:
        if controls:
            from mi_align.evaluation.control_counts import compare_recipe_samples

            save_json(compare_recipe_samples(samples, conds).to_dict(), out / "controls")

    ev = evaluate_conditions(
        loaded, conds, cfg, EvalFiles.in_folder(out),
        questions=qfile.questions if qfile else None,
        make_judge=None if args.no_judge else lambda: _judge_backend(args),
        options=JudgeOptions(check=not args.skip_judge_check,
                             judge_prompts=qfile.judge_prompts if qfile else None),
        on_samples=save_controls, report=print)
    if ev.judged is None:
        print(f"{len(ev.samples)} samples in {out}/samples.jsonl; string table written (no judge)")
        return 0
    summary = ev.judged.summary
    for cond, r in summary.em.items():
        print(f"{cond:22} EM {r.rate:6.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]  scored "
              f"{r.n_scored}, refusal/code {r.n_unscored}, coherent {r.n_coherent}")
    print(f"figures and JSON in {out}/ (judge: {summary.judge})")
    return 0


def _question_file(path: str | None) -> Any:
    """The question file (emergent-misalignment YAML or a JSON list), read and checked before
    any model loads; None for the 8 built-in questions."""
    if not path:
        return None
    from mi_align.data.betley import load_eval_file

    return load_eval_file(path)


def _judge(args: argparse.Namespace) -> int:
    from mi_align.errors import InputError
    from mi_align.evaluation.sampling import load_samples
    from mi_align.pipelines.steering_eval import (
        EvalFiles,
        JudgeOptions,
        check_out_file,
        judge_and_summarize,
    )

    check_device_args(args)  # for a local --judge-model, before anything else
    if args.check_only:
        from mi_align.evaluation.judge_check import check_judge

        if args.out:
            check_out_file(Path(args.out).with_suffix(".json"))
        check = check_judge(_judge_backend(args))
        if args.out:
            from mi_align.plotting import save_json

            save_json(check.to_dict(), Path(args.out).with_suffix(""))
        print(check.verdict())
        return 0 if check.passes else 1
    if not args.samples or not args.out:
        raise InputError("mi-align judge", "needs --samples and --out", "or use --check-only")
    out = check_out_file(args.out)
    qfile = _question_file(args.questions)
    samples = load_samples(args.samples)
    if not samples:
        raise InputError(args.samples, "no samples in the file", "run `mi-align steer eval`")
    files = EvalFiles(Path(args.samples), out, out.with_name(out.stem + "_check.json"))
    judged = judge_and_summarize(
        _judge_backend(args), samples, files,
        JudgeOptions(check=not args.skip_judge_check,
                     judge_prompts=qfile.judge_prompts if qfile else None), report=print)
    print(json.dumps(judged.summary.to_dict(), indent=1, default=str))
    return 0


def _add_model(p: argparse.ArgumentParser) -> None:
    from mi_align.models.registry import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model spec: packaged name (`mi-align models list`), HF directory, "
                   ".gguf file or hub id")
    p.add_argument("--adapter", action="append",
                   help="peft LoRA adapter: a directory, or a hub id org/name (repeatable)")
    add_device_args(p)


def _add_judge(p: argparse.ArgumentParser) -> None:
    from mi_align.evaluation.endpoint import EndpointConfig
    from mi_align.evaluation.judge import NUMBER_MODES, default_judge_model

    p.add_argument("--judge-model", default=default_judge_model(),
                   help="local judge model spec (default: strongest shipped instruct model)")
    p.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    p.add_argument("--judge-name", help="model name at --judge-url")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the endpoint's API key")
    p.add_argument("--judge-timeout", type=float, default=EndpointConfig.timeout_s,
                   help="seconds per --judge-url request before retrying (default %(default)s)")
    p.add_argument("--judge-retries", type=int, default=EndpointConfig.max_retries,
                   help="retries after a timeout, 429 or 5xx from --judge-url "
                   "(default %(default)s; exponential backoff, honours Retry-After)")
    p.add_argument("--judge-concurrency", type=int, default=EndpointConfig.max_concurrency,
                   help="--judge-url requests in flight at once (default %(default)s); lower it "
                   "to respect the server's rate limits")
    p.add_argument("--judge-numbers", choices=NUMBER_MODES, default="auto",
                   help="how --judge-url number probabilities are read: first-token (one "
                   "request), digits (exact for any tokenizer: one more request per number "
                   "prefix, continuing the partial answer; needs vLLM) or auto (first token "
                   "for whole-number tokenizers, else digits; default)")
    p.add_argument("--skip-judge-check", action="store_true",
                   help="do not score the 24 known-answer check responses first")


def _export(args: argparse.Namespace) -> int:
    from mi_align.errors import InputError
    from mi_align.pipelines.steering_eval import check_out_file
    from mi_align.steering.export import block_output_index, export_gguf, export_safetensors
    from mi_align.steering.vector import SteeringVector

    if args.format == "gguf" and not args.model_hint:
        raise InputError("--model-hint", "is required for --format gguf",
                         "pass the model's llama.cpp architecture, e.g. --model-hint llama")
    out = check_out_file(args.out)
    vectors = [SteeringVector.load(p) for p in args.vector]
    if args.format == "gguf":
        path = export_gguf(vectors, out, model_hint=args.model_hint, model_id=args.model_id)
        for v in vectors:
            print(f"{path}: layer {v.layer} -> direction.{block_output_index(v.layer)} "
                  f"(strength {v.strength:g} baked in)")
    else:
        path = export_safetensors(vectors, out, model_id=args.model_id,
                                  convention=args.convention)
        print(f"{path}: {len(vectors)} vector(s), {args.convention} keys, strengths baked in")
    return 0


def _import(args: argparse.Namespace) -> int:
    from mi_align.pipelines.steering_eval import check_out_dir
    from mi_align.steering.export import import_gguf, import_safetensors

    out = check_out_dir(args.out)
    if Path(args.file).suffix == ".gguf":
        vectors = import_gguf(args.file)
    else:
        vectors = import_safetensors(args.file, convention=args.convention)
    for v in vectors:
        path = v.save(out / f"{v.name or 'vector'}_layer{v.layer}.safetensors")
        print(f"{path}: layer {v.layer}, |v| = {float(v.vector.norm()):.3f}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``steer`` and ``judge`` to the ``mi-align`` parser."""
    from mi_align.steering.recipe import TARGETS_BY_NAME
    from mi_align.steering.vector import SteeringOperator

    steer = subparsers.add_parser("steer", help="one-shot steering vectors").add_subparsers(
        dest="action", required=True)
    opt = steer.add_parser("optimize", help="optimise one vector from a prompt + target")
    _add_model(opt)
    opt.add_argument("--layer", type=int, required=True)
    opt.add_argument("--prompt", required=True, help="user message")
    opt.add_argument("--target", required=True, help="text to promote (or suppress)")
    opt.add_argument("--prefix", default="", help="start of the reply before the target")
    opt.add_argument("--suppress", action="store_true", help="suppression loss instead")
    opt.add_argument("--target-loss", type=float, help="satisficing target (loss units, nats)")
    opt.add_argument("--lr", type=float, default=0.01)
    opt.add_argument("--steps", type=int, default=50)
    opt.add_argument("--coldness", type=float, default=0.7)
    opt.add_argument("--max-norm", type=float)
    opt.add_argument("--positions", type=_positions, default="all")
    opt.add_argument("--operator", choices=[o.value for o in SteeringOperator], default="add",
                     help="add: x + v; clamp: the component along v set to |v|")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--out", required=True, help="output .safetensors")
    opt.set_defaults(func=_optimize)

    rec = steer.add_parser("recipe", help="the paper's anti-refusal + harmful-code vectors")
    _add_model(rec)
    rec.add_argument("--targets", nargs="+", default=list(TARGETS_BY_NAME),
                     choices=sorted(TARGETS_BY_NAME))
    rec.add_argument("--harmful-layer", type=int)
    rec.add_argument("--anti-refusal-layer", type=int)
    rec.add_argument("--harmful-steps", type=int, default=50)
    rec.add_argument("--anti-refusal-steps", type=int, default=100)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", required=True, help="output directory")
    rec.set_defaults(func=_recipe)

    ev = steer.add_parser("eval", help="sample + judge + figures (resumable)")
    _add_model(ev)
    _add_judge(ev)
    ev.add_argument("--recipe", help="directory written by `steer recipe`")
    ev.add_argument("--vector", action="append",
                    help="extra condition NAME=PATH[*STRENGTH][+PATH[*STRENGTH]...]")
    ev.add_argument("--n", type=int, default=16, help="samples per question and condition")
    ev.add_argument("--max-new-tokens", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--no-brief", action="store_true", help="do not append ' Be brief.'")
    ev.add_argument("--no-judge", action="store_true", help="sample and count strings only")
    ev.add_argument("--no-controls", action="store_true",
                    help="without the control conditions (3 norm-matched random vectors and a "
                    "toxic − toxic_reject mean-difference vector, each + anti-refusal ×6)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", required=True, help="output directory (resumes if present)")
    ev.add_argument("--questions", help="question file: YAML in the emergent-misalignment "
                    "format (its judge_prompts are used) or a JSON list; default: the 8 "
                    "built-in questions")
    ev.set_defaults(func=_eval)

    exp = steer.add_parser("export", help="vectors as a llama.cpp control vector or {layer: v}")
    exp.add_argument("--vector", action="append", required=True, help="mi_align .safetensors")
    exp.add_argument("--format", choices=["gguf", "safetensors"], default="gguf")
    exp.add_argument("--model-hint", default="", help="llama.cpp architecture (gguf), e.g. llama")
    exp.add_argument("--model-id", default="", help="model id or path, kept in the metadata")
    exp.add_argument("--convention", choices=["block_output", "resid_pre"],
                     default="block_output", help="safetensors layer keys (default: repeng's)")
    exp.add_argument("--out", required=True, help="output .gguf / .safetensors")
    exp.set_defaults(func=_export)

    imp = steer.add_parser("import", help="a control-vector .gguf or {layer: v} .safetensors")
    imp.add_argument("file")
    imp.add_argument("--convention", choices=["block_output", "resid_pre"],
                     help="for .safetensors without layer_convention metadata")
    imp.add_argument("--out", required=True, help="output directory")
    imp.set_defaults(func=_import)

    judge = subparsers.add_parser("judge", help="score a samples JSONL with any judge backend")
    _add_judge(judge)
    judge.add_argument("--samples", help="JSONL written by `steer eval`")
    judge.add_argument("--out", help="judged JSONL (resumes if present); with --check-only, "
                       "where to write the check's JSON")
    judge.add_argument("--questions", help="the question file the samples came from (its "
                       "judge_prompts are used)")
    judge.add_argument("--check-only", action="store_true",
                       help="only score the 24 known-answer responses; exit 1 if the judge fails")
    add_device_args(judge)  # for a local --judge-model
    judge.set_defaults(func=_judge)
