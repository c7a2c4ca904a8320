"""`cto` console script: one subcommand per module in :mod:`cto.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so
``cto --help`` stays fast and a broken heavy import cannot break other commands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pydantic import ValidationError

from features.errors import CTOError

COMMANDS = {
    "simulate": "cto.commands.simulate",
    "validate": "cto.commands.validate",
    "summary": "cto.commands.summary",
    "features": "cto.commands.features",
    "import": "cto.commands.import_data",
    "train": "cto.commands.train",
    "score": "cto.commands.score",
    "backtest": "cto.commands.backtest",
    "promote": "cto.commands.promote",
    "materialize": "cto.commands.materialize",
    "serve": "cto.commands.serve",
    "report": "cto.commands.report",
    "demo": "cto.commands.demo",
    "experiment": "cto.commands.experiment",
    "policy": "cto.commands.policy",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cto",
        description="Contact-to-Order prediction: simulate, validate, train, serve, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def quiet_libraries() -> None:
    """Users read what the command says, not MLflow's progress bars and info lines."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    # LightGBM's OpenMP threads spin-wait by default; on a busy 2-core machine a 4,000-row fit
    # took 126 s instead of 3 s. Passive waiting must be set before LightGBM is loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Polars' allocator (jemalloc) hands freed pages back to the OS after 0.5 s. A batch job frees
    # and allocates chunk-sized buffers several times a second, so the kernel faulted them in and
    # zeroed them again and again (`cto features` on 10M contacts: 14.8 s of system time). Kept 2 s:
    # 60% fewer page faults in the feature pass, 8% less of its CPU, peak memory +5% (10 s: +42%,
    # over 2 GB). jemalloc reads this when Polars loads, so it is set before any command imports it.
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:2000,muzzy_decay_ms:2000")
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CTOError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # settings from CTO_* variables or options
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or exc.title
            print(f"error: {exc.title} {where}: {error['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
