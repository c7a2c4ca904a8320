"""Fuzz campaign: schemathesis with every check against the served OpenAPI document.

Starts `cto serve --workers 2` with a bearer token and runs ``schemathesis run`` on
``/docs.json`` with all checks (server errors, status codes, content types, response schemas,
negative data rejected, positive data accepted, auth, ...), ``--max-examples`` cases per
operation and phase, ``schemathesis.toml`` from the repository root. The suite runs the same with
a small bound (tests/integration/test_serving_reliability.py).

    .venv/bin/python -m benchmarks.fuzz [--max-examples 300] [--tracking-uri sqlite:////abs/mlflow.db]

Writes benchmarks/results/fuzz.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._reliability import trained_registry
from serving.process import REPO, start_server

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz.md"
TOKEN = "fuzz-token"


def run(args: argparse.Namespace) -> dict:
    tracking_uri = trained_registry(args.tracking_uri)
    root = Path(tempfile.mkdtemp(prefix="cto-fuzz-"))
    env = {
        "CTO_TRACKING_URI": tracking_uri,
        "CTO_EVENT_STORE_URL": f"sqlite:///{root / 'events.db'}",
        "CTO_WORKERS": "2",
        "CTO_API_TOKEN": TOKEN,
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    server = start_server(env, root / "server.log")
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
             str(REPO / "schemathesis.toml"), "run", f"{server.base_url}/docs.json",
             "--header", f"Authorization: Bearer {TOKEN}", "--checks", "all",
             "--max-examples", str(args.max_examples), "--seed", str(args.seed),
             "--generation-database", "none", "--workers", "2", "--no-color"],
            capture_output=True, text=True, check=False, cwd=REPO,
        )  # fmt: skip
        log = server.log_path.read_text(errors="replace")
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    generated = re.search(r"([\d,]+) generated", proc.stdout)
    cases = int(generated.group(1).replace(",", "")) if generated else 0
    summary = proc.stdout.strip().splitlines()
    # Each failure: the operation (a "____ POST /x ____" header) and the answer's first line.
    found, operation = [], ""
    for index, line in enumerate(summary):
        if line.startswith("___"):
            operation = line.strip("_ ")
        elif re.match(r"^\[\d{3}\]", line.strip()):
            body = next((b.strip() for b in summary[index + 1 :] if b.strip()), "")
            found.append(f"{operation}: {line.strip()} {body[:240]}")
    return {
        "returncode": proc.returncode,
        "cases": cases,
        "summary": next(
            (s for s in reversed(summary) if "====" in s), summary[-1] if summary else ""
        ),
        "failures": [s.strip() for s in summary if s.strip().startswith("❌ ST")],
        "seconds": elapsed,
        "answers": found,
        "server_5xx_tracebacks": log.count("Traceback"),
        "stdout": proc.stdout,
    }


def write_results(result: dict, args: argparse.Namespace) -> None:
    verdict = (
        "0 failures" if result["returncode"] == 0 else f"FAILED: {'; '.join(result['failures'])}"
    )
    lines = [
        "## fuzz",
        "",
        f"`python -m benchmarks.fuzz --max-examples {args.max_examples} --seed {args.seed}`, measured "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: schemathesis 4.32 with every check "
        "against `cto serve --workers 2` (bearer token set), from the served `/docs.json`.",
        "",
        "| operations | test cases | result | server tracebacks | minutes |",
        "|---:|---:|---|---:|---:|",
        f"| 8 | {result['cases']:,} | **{verdict}** | {result['server_5xx_tracebacks']} "
        f"| {result['seconds'] / 60:.1f} |",
        "",
        f"- schemathesis summary: `{result['summary'].strip('= ')}`",
        *(f"- failing case: {answer}" for answer in result["answers"]),
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(RESULTS.read_text())
    if result["returncode"] != 0:
        print(result["stdout"][-8000:], file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tracking-uri", default=None, help="a trained registry (else one is trained)"
    )
    args = parser.parse_args(argv)
    write_results(run(args), args)
    os._exit(0)  # schemathesis leaves non-daemon threads behind


if __name__ == "__main__":
    main()
