"""``autophagy``: the command line. Argument parsing and error reporting only; every command
is one call into :mod:`autophagy.stages`, :mod:`autophagy.loop` or :mod:`autophagy.report`.

Help shows every option's default; a misspelt command or option gets "did you mean"; ``--debug``
(full tracebacks) is accepted before or after the command; ``autophagy completion bash`` prints a
bash completion script generated from this parser.

Every command takes ``--config FILE`` (YAML; default: the embedded default, sklearn digits +
tiny EDM) and any number of ``-S section.option=value`` overrides, e.g.
``-S loop.lambdas=[0,1] -S train.budget_kimg=50``.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from autophagy.config import ConfigError, ExperimentConfig, format_lambda, load_config, parse_lambda, to_dict

EXIT_USER_ERROR = 2


def _config(args: argparse.Namespace) -> ExperimentConfig:
    return load_config(args.config, args.set)


def _print(result: Any) -> None:
    print(json.dumps(result, indent=2, default=str))


def _lam(text: str | None) -> float | None:
    return None if text is None else parse_lambda(text, option="--lam")


# ------------------------------------------------------------------ commands


def cmd_config(args):
    cfg = _config(args)
    if args.list:
        from autophagy.option_reference import format_reference

        print(format_reference(cfg), end="")
        return
    import yaml

    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")


def cmd_completion(args):
    from autophagy.completion import bash_script

    print(bash_script(build_parser()), end="")


def cmd_prepare(args):
    from autophagy.stages import prepare

    _print(prepare.run(_config(args), args.out))


def cmd_features(args):
    from autophagy.stages import features

    _print(features.run(_config(args), args.out))


def cmd_train(args):
    from autophagy.distributed import is_main_process
    from autophagy.stages import train
    from autophagy.tracking import check_tracking

    if args.step_options is not None:  # a Kubeflow train task's ranks (autophagy.distributed.run_train_under_torchrun)
        from autophagy.step_config import BOOKKEEPING_ENV, config_for_step

        cfg = config_for_step(
            "train", json.loads(args.step_options.read_text()), json.loads(os.environ.get(BOOKKEEPING_ENV) or "{}")
        )
    else:
        cfg = _config(args)
    check_tracking(cfg)  # before any work: a stalled tracking server fails now, not after training
    result = train.run(cfg, args.train_set, args.out, args.generation, args.seed, lam=_lam(args.lam), init=args.init)
    if is_main_process():  # under torchrun every rank returns the same result: rank 0 reports it
        if args.result is not None:
            from autophagy import atomic

            atomic.write_text(args.result, json.dumps(result, indent=2, default=str) + "\n")  # NaN allowed
        _print(result)


def cmd_sample(args):
    from autophagy.stages import sample

    _print(sample.run(_config(args), args.model, args.out, args.n, args.seed, args.generation, start=args.start))


def cmd_merge_samples(args):
    from autophagy.stages import sample

    _print(sample.merge(args.parts, args.out))


def cmd_mix(args):
    from autophagy.stages import mix

    _print(mix.run(_config(args), args.real, args.synthetic, _lam(args.lam), args.out, args.generation, args.seed))


def cmd_evaluate(args):
    from autophagy.stages import evaluate

    references = {}
    for item in args.reference:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"--reference must look like NAME=DIR (e.g. train=runs/x/data/train), got {item!r}")
        references[name] = path
    models = {}
    for item in args.model or ():
        name, sep, path = item.partition("=")
        if not sep or name not in ("current", "generation0"):
            raise ConfigError(
                f"--model must look like current=DIR or generation0=DIR (checkpoint directories), got {item!r}"
            )
        models[name] = path
    _print(
        evaluate.run(
            _config(args),
            args.samples,
            references,
            args.out,
            args.features,
            args.generation,
            args.seed,
            lam=_lam(args.lam),
            grid_path=args.grid,
            models=models or None,
        )
    )


def cmd_generation(args):
    from autophagy import loop
    from autophagy.layout import RunLayout
    from autophagy.tracking import check_tracking

    cfg = _config(args)
    if args.config is not None:
        from autophagy.dvc_params import check_stage

        check_stage(args.config)  # under dvc repro: dvc.yaml must be what params.yaml makes now
    layout = RunLayout(Path(args.root))
    lam = _lam(args.lam)
    if lam is not None and args.lam != format_lambda(lam):
        raise ConfigError(
            f"--lam {args.lam}: write lambda as {format_lambda(lam)!r} (run directories are named by that text)"
        )
    if args.generation > 0 and lam is None:
        raise ConfigError("--lam is required for generations >= 1")
    check_tracking(cfg)  # before any work: a stalled tracking server fails now, not after training
    loop.run_stage_generation(cfg, layout, lam if args.generation > 0 else None, args.seed, args.generation)


def cmd_run(args):
    from autophagy import loop, report
    from autophagy.layout import new_root

    cfg = _config(args)
    _print_cost(cfg, args)
    root = Path(args.root) / cfg.name
    if args.new_root:
        root = new_root(Path(args.root), cfg.name)
        print(f"run directory: {root}")
    layout = loop.run_experiment(cfg, root, redo_changed=args.redo_changed)
    if not args.no_report:
        summary = report.write_report(layout.root, cfg)
        print(f"report: {summary['markdown']}")


def _print_cost(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    """One line, before any work: the training compute in GPU-hours (:mod:`autophagy.cost`)."""
    from autophagy import cost

    print(cost.describe(cfg, args.gpu_tflops, args.gpu_utilisation), flush=True)


def _print_pipeline_cost(args: argparse.Namespace) -> None:
    """:func:`_print_cost` of a config that may hold a ``cluster:`` section."""
    from autophagy.pipelines.cluster import load_pipeline_config

    cfg, _ = load_pipeline_config(args.config, args.set)
    _print_cost(cfg, args)


def cmd_report(args):
    from autophagy import report

    saved = Path(args.root) / "config.json"
    if args.config:
        from autophagy.dvc_params import check_stage

        check_stage(args.config)  # under dvc repro: dvc.yaml must be what params.yaml makes now
    cfg = _config(args) if args.config else load_config(saved, args.set) if saved.is_file() else None
    summary = report.write_report(Path(args.root), cfg, metric=args.metric, out=args.out)
    if args.summary is not None:
        from autophagy import dvc_summary

        dvc_summary.write(Path(args.root), args.summary)
    print(Path(summary["markdown"]).read_text())


def cmd_theory(args):
    from autophagy import theory

    cfg = _config(args)
    if cfg.model.family != "gaussian":
        raise ConfigError("autophagy theory simulates the gaussian family; use --config configs/gaussian-theory.yaml")
    out = args.out or Path(args.root) / cfg.name / "theory"
    result = theory.write_report(
        out,
        args.n or [cfg.data.n_train],
        cfg.loop.lambdas,
        cfg.loop.generations,
        args.replicates,
        seed=cfg.loop.seeds[0],
        estimator=cfg.model.estimator,
    )
    print(Path(result["markdown"]).read_text())


def cmd_dvc_params(args):
    from autophagy import dvc_params

    dvc_yaml = dvc_params.write(_config(args), Path(args.out))
    print(f"wrote {args.out} and {dvc_yaml}")


def cmd_pipeline_compile(args):
    from autophagy.pipelines import cli_compile

    _print_pipeline_cost(args)
    print(cli_compile(args.config, args.set, args.out, image=args.image))


def cmd_pipeline_submit(args):
    from autophagy.pipelines import cli_submit

    _print_pipeline_cost(args)
    print(
        cli_submit(
            args.host,
            args.config,
            args.set,
            experiment=args.experiment,
            image=args.image,
            namespace=args.namespace,
            token_path=args.token_path,
            timeout=args.timeout,
            local_root=args.local,
            poll_seconds=args.poll_seconds,
            log=lambda line: print(line, flush=True),
            existing_token=args.existing_token,
            cookies=args.cookies,
            cookie_file=args.cookie_file,
        )
    )


def cmd_pull(args):
    from autophagy.pipelines.pull import pull

    pull(
        args.run,
        args.root,
        args.targets,
        endpoint_url=args.endpoint_url,
        data=not args.no_data,
        log=lambda line: print(line, flush=True),
    )


# ------------------------------------------------------------------ parser

DESCRIPTION = (
    "Self-consuming training loops for generative models (Bertrand et al., ICLR 2024): train a model, "
    "sample from it, mix the samples with real data at a ratio lambda, retrain, and measure how the "
    "generations drift (Frechet distance, precision/recall). `autophagy run` runs a whole experiment "
    "(configs/*.yaml) locally; `autophagy pipeline submit` runs it on Kubeflow."
)
EPILOG = (
    "Every config option is set with -S KEY=VALUE; `autophagy config --list` lists them with type, default "
    "and help. Errors print one line; --debug (anywhere on the line) shows the traceback."
)

#: Help of options declared without one, by destination.
_HELP = {
    "out": "output directory",
    "train_set": "dataset directory to train on (mix output)",
    "generation": "generation index t (0: trained on real data only)",
    "seed": "seed of the chain",
    "lam": "lambda of the chain: synthetic / real ratio (a number >= 0 or inf)",
    "model": "checkpoint directory",
    "n": "number of samples",
    "parts": "sample sets to join, in order",
    "real": "real training set directory",
    "samples": "sample set directory",
    "reference": "reference set as NAME=DIR (repeatable)",
    "no_report": "skip the report after the run",
    "replicates": "simulated replicates per (n, lambda)",
    "root": "parent of the experiment directory",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help states its default already or there is
    none to state (``None``, an off flag, a required option)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or action.default == []
            or action.required
            or isinstance(action, argparse._SubParsersAction)
        ):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest command or option ("did you mean")."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        super().error(message + _did_you_mean(self, message))


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """``"; did you mean 'run'?"`` for an invalid choice or an unrecognized option, else ``""``."""
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        words, candidates = [choice.group(1)], re.findall(r"'([^']*)'", choice.group(2))
        cutoff = 0.6  # short command names: 'rnu' -> 'run
    elif message.startswith("unrecognized arguments: "):
        words = [w.split("=")[0] for w in message.split(": ", 1)[1].split() if w.startswith("-")]
        candidates = sorted({o for p in _parsers(parser) for a in p._actions for o in a.option_strings})
        cutoff = 0.75  # many options: '--confg' -> '--config', not '--n'
    else:
        return ""
    hints = [
        f"{w!r}: did you mean {' or '.join(map(repr, close))}?"
        for w in words
        if (close := difflib.get_close_matches(w, candidates, n=2, cutoff=cutoff))
    ]
    return ("; " + "; ".join(hints)) if hints else ""


def _parsers(parser: argparse.ArgumentParser):
    """``parser`` and every subparser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _parsers(child)


def _finish(parser: argparse.ArgumentParser) -> None:
    """Every subcommand accepts ``--debug`` too, and every option has a help text."""
    for p in _parsers(parser):
        if p is not parser and not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument(
                "--debug",
                action="store_true",
                default=argparse.SUPPRESS,
                help="show full tracebacks on errors (also accepted before the command)",
            )
        for action in p._actions:
            if action.help is None:
                action.help = _HELP.get(action.dest, action.dest.replace("_", " "))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autophagy", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "--config", type=Path, default=None, help="experiment YAML (default: the embedded digits + EDM default)"
        )
        p.add_argument(
            "-S",
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config option (repeatable); `autophagy config --list` lists every KEY",
        )
        p.set_defaults(func=func)
        return p

    p = command("config", cmd_config, "print the resolved configuration as YAML")
    p.add_argument(
        "--list",
        action="store_true",
        help="instead: every option (KEY of -S KEY=VALUE) with its type, default and help",
    )
    p = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="print a completion script; enable it with: source <(autophagy completion bash)",
    )
    p.add_argument("shell", choices=["bash"], help="the shell")
    p.set_defaults(func=cmd_completion)
    p = command("prepare", cmd_prepare, "write the real train/test data sets")
    p.add_argument("--out", required=True, type=Path, help="directory that receives train/ and test/")
    p = command("features", cmd_features, "build (train) the feature extractor of evaluate.features")
    p.add_argument("--out", required=True, type=Path)
    p = command("train", cmd_train, "train one generation on a dataset directory")
    p.add_argument("--train-set", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--generation", required=True, type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lam", default=None, help="lambda of the chain (omit for generation 0)")
    p.add_argument("--init", type=Path, default=None, help="checkpoint of the previous generation")
    p.add_argument("--result", type=Path, default=None, help="also write the result (JSON) here")
    p.add_argument(
        "--step-options",
        type=Path,
        default=None,
        help="instead of --config: the train step's options as JSON (what a Kubeflow task receives)",
    )
    p = command("sample", cmd_sample, "draw a synthetic data set from a checkpoint")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", required=True, type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generation", required=True, type=int)
    p.add_argument("--start", type=int, default=0, help="index of the first sample (a piece of a larger draw)")
    p = command("merge-samples", cmd_merge_samples, "join sample sets drawn in pieces (sample --start) into one")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("parts", nargs="+", type=Path)
    p = command("mix", cmd_mix, "compose a training set: all real data + floor(lambda n) synthetic samples")
    p.add_argument("--real", required=True, type=Path)
    p.add_argument(
        "--synthetic",
        type=Path,
        action="append",
        default=None,
        help="sample set of the previous generation (repeat, oldest first, for the accumulate strategies)",
    )
    p.add_argument("--lam", required=True, help="ratio |synthetic| / |real|: a number >= 0 or inf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--generation", required=True, type=int)
    p = command("evaluate", cmd_evaluate, "metrics of a sample set against reference sets")
    p.add_argument("--samples", required=True, type=Path)
    p.add_argument("--reference", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--out", required=True, type=Path, help="metrics.json to write")
    p.add_argument("--features", type=Path, default=None, help="directory of the feature extractor (features stage)")
    p.add_argument("--generation", required=True, type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lam", default=None)
    p.add_argument("--grid", type=Path, default=None, help="PNG grid of samples to write")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="current=DIR|generation0=DIR",
        help="text: the checkpoints of this generation and of generation 0 (perplexities); give both",
    )
    p = command("generation", cmd_generation, "run one generation (mix, train, sample, evaluate) in a run directory")
    p.add_argument("--root", required=True, type=Path, help="runs/<experiment>")
    p.add_argument("--lam", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generation", type=int, default=0)
    p = command("run", cmd_run, "run every lambda, seed and generation in one process, then report")
    p.add_argument("--root", type=Path, default=Path("runs"), help="parent of the experiment directory (default: runs)")
    p.add_argument("--no-report", action="store_true")
    resuming = p.add_mutually_exclusive_group()
    resuming.add_argument(
        "--redo-changed",
        action="store_true",
        help="where ROOT/<name> holds outputs made with other options, redo what the change "
        "affects (kept otherwise) instead of refusing",
    )
    resuming.add_argument(
        "--new-root",
        action="store_true",
        help="start in a new run directory: ROOT/<name> if it does not exist, else the first "
        "free ROOT/<name>-2, -3, ...",
    )
    _add_cost_options(p)
    p = command("report", cmd_report, "figures and a markdown table from a finished run directory")
    p.add_argument("--root", required=True, type=Path, help="runs/<experiment>")
    p.add_argument(
        "--metric", default=None, help="metric to plot (default: fd_train for images, swd_train for vectors)"
    )
    p.add_argument("--out", type=Path, default=None, help="report directory (default: ROOT/report)")
    p.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="also write the last generation's headline metrics per lambda here (JSON; DVC's summary.json)",
    )
    p = command("theory", cmd_theory, "the Gaussian warm-up simulated exactly over many replicates (seconds)")
    p.add_argument("--n", type=int, action="append", help="real sample size n (repeatable; default data.n_train)")
    p.add_argument("--replicates", type=int, default=2000)
    p.add_argument("--root", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path, default=None, help="default: ROOT/<experiment>/theory")
    p = command("dvc-params", cmd_dvc_params, "write params.yaml and dvc.yaml (beside it) from a config")
    p.add_argument("--out", type=Path, default=Path("params.yaml"), help="the params file (default: params.yaml)")

    p = sub.add_parser(
        "pull",
        help="a Kubeflow run's pointer tree into this DVC checkout, then dvc pull",
        description="write runs/<experiment>/ (DVC pointers, metrics, grids, report) of a Kubeflow "
        "run with cluster.dvc_remote from its MLflow parent run, add the remote "
        "'autophagy' and dvc pull the parts asked for",
    )
    p.add_argument("--run", required=True, help="the MLflow parent run id, or the experiment's name (its latest run)")
    p.add_argument("--root", type=Path, default=Path("."), help="the DVC checkout (default: .)")
    p.add_argument("--endpoint-url", default=None, help="reach the remote here instead (e.g. a port-forward)")
    p.add_argument("--no-data", action="store_true", help="only the pointer tree; no dvc pull")
    p.add_argument(
        "targets",
        nargs="*",
        help="parts below runs/<experiment>/ (default: all), e.g. lam-0.5/seed-0/gen-007/train_set",
    )
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "pipeline",
        help="compile or submit the Kubeflow pipeline (needs autophagy[pipeline])",
        description="compile or submit the Kubeflow pipeline (needs autophagy[pipeline])",
    )
    pipeline_sub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    def pipeline_command(name: str, func, help: str) -> argparse.ArgumentParser:
        q = pipeline_sub.add_parser(name, help=help, description=help)
        q.add_argument(
            "--config",
            type=Path,
            default=None,
            help="experiment YAML, optionally with a cluster: section (default: the embedded default)",
        )
        q.add_argument(
            "-S",
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config option; cluster.KEY=VALUE for the cluster section",
        )
        q.add_argument(
            "--image",
            default=None,
            help="project image of every task (default: cluster.image, then "
            "$AUTOPHAGY_IMAGE, then ghcr.io/autophagy/autophagy:<version>); pinned, never latest",
        )
        _add_cost_options(q)
        q.set_defaults(func=func)
        return q

    q = pipeline_command(
        "compile",
        cmd_pipeline_compile,
        "compile the experiment's KFP runs into packages (YAML) sized to the backend's limits",
    )
    q.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("pipelines-out"),
        help="folder for the packages and runs.json (default: pipelines-out)",
    )
    q = pipeline_command(
        "submit",
        cmd_pipeline_submit,
        "run the experiment on Kubeflow Pipelines as a sequence of KFP runs, and wait for it",
    )
    q.add_argument(
        "--host", default=None, help="KFP API URL, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT)"
    )
    q.add_argument(
        "--local",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the same packages under kfp.local on this machine, with DIR as the pipeline root",
    )
    q.add_argument("--experiment", default=None, help="KFP experiment (default: the config's name)")
    q.add_argument(
        "--poll-seconds", type=float, default=30.0, help="how often to ask KFP about runs in flight (default: 30)"
    )
    q.add_argument("--namespace", default=None, help="profile namespace (multi-user Kubeflow)")
    q.add_argument(
        "--token-path",
        default=None,
        help="file holding a bearer token for the KFP API (default: $KF_PIPELINES_SA_TOKEN_PATH)",
    )
    q.add_argument(
        "--existing-token",
        default=None,
        metavar="TOKEN",
        help="bearer token for the KFP API (default: $KF_PIPELINES_TOKEN, which `ps` does not show)",
    )
    q.add_argument(
        "--cookies",
        default=None,
        metavar="COOKIES",
        help="Cookie header of a logged-in Dex session of multi-user Kubeflow, e.g. "
        "authservice_session=VALUE (default: $KF_PIPELINES_COOKIES)",
    )
    q.add_argument(
        "--cookie-file", default=None, metavar="PATH", help="file holding that Cookie header (default: none)"
    )
    q.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the host to answer (default: 10)")
    _finish(parser)
    return parser


def _add_cost_options(parser: argparse.ArgumentParser) -> None:
    """The options of the cost line printed before work starts (:func:`_print_cost`)."""
    from autophagy.cost import DEFAULT_TFLOPS, DEFAULT_UTILISATION

    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=DEFAULT_TFLOPS,
        help="stated GPU throughput for the printed cost estimate, TFLOP/s (989: H100 SXM dense bf16; A100: 312)",
    )
    parser.add_argument(
        "--gpu-utilisation",
        type=float,
        default=DEFAULT_UTILISATION,
        help="share of --gpu-tflops a training step sustains, for the cost estimate",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("autophagy")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    args = build_parser().parse_args(argv)
    try:
        _check_launcher(args)
        args.func(args)
    except KeyboardInterrupt:
        print("autophagy: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - reported plainly, traceback on --debug
        if args.debug or not (_is_user_error(err) or isinstance(err, OSError)):
            raise
        print(f"autophagy: error: {_os_error_line(err) if isinstance(err, OSError) else err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def console_main() -> None:
    """The ``autophagy`` command: a stage command through the stage server
    (:mod:`autophagy.stage_server`: a process that has imported torch and mlflow forks one child
    per command), else :func:`main` in this process; then :func:`finish_process`."""
    from autophagy.stage_server import run_through_server

    code = run_through_server(sys.argv[1:])
    finish_process(main() if code is None else code)


def finish_process(code: int) -> NoReturn:
    """End the process with ``code``, without the interpreter's teardown.

    Exiting as CPython's own finalization begins (waiting for non-daemon threads, the atexit hooks:
    logging, MLflow; the standard streams flushed) and then ending the process skips the slow part,
    the teardown of every imported module: 1-2 s per process once torch and mlflow are loaded. An
    exception raised by :func:`main` still leaves the normal way, with its traceback."""
    import atexit
    import threading

    threading._shutdown()  # what Py_FinalizeEx does first: join non-daemon threads, stop executors
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _os_error_line(err: OSError) -> str:
    """``runs/x/config.json: No space left on device (ENOSPC)``: the path(s) and what the OS said.
    (Every write goes through :mod:`autophagy.atomic`, so a failed one leaves nothing half-written.)"""
    paths = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    code = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    said = (err.strerror or str(err)) + (f" ({code})" if code else "")
    return f"{paths}: {said}" if paths else said


def _check_launcher(args: argparse.Namespace) -> None:
    """Only ``train`` runs data-parallel: under torchrun (WORLD_SIZE > 1) every other command refuses."""
    from autophagy.distributed import launched_world_size

    if args.command != "train" and launched_world_size() > 1:
        raise ConfigError(
            f"`autophagy {args.command}` runs in one process; only `autophagy train` runs under torchrun "
            f"(WORLD_SIZE={launched_world_size()})"
        )


def _is_user_error(err: Exception) -> bool:
    """Errors that are the input's fault get a one-line message instead of a traceback."""
    from autophagy.data.dataset import DatasetError
    from autophagy.models.base import ModelError
    from autophagy.run_lock import RunRootBusy
    from autophagy.tracking import TrackingError

    known: tuple[type, ...] = (ConfigError, DatasetError, ModelError, TrackingError, RunRootBusy)
    features = sys.modules.get("autophagy.metrics.features")  # not imported: the error cannot be its type
    if features is not None:
        known += (features.FeatureExtractorUnavailable,)
    pipeline_errors = sys.modules.get("autophagy.pipelines.errors")  # imported by `autophagy pipeline ...`
    if pipeline_errors is not None:
        known += (pipeline_errors.PipelineError,)
    return isinstance(err, known)


if __name__ == "__main__":
    console_main()
