"""Assemble docs/benchmarks.md from the per-benchmark result files in benchmarks/results/."""

from __future__ import annotations

from pathlib import Path

ORDER = [
    "simulate",
    "features",
    "scale_out",
    "scale_out_large",
    "online_features",
    "training",
    "real_data",
    "batch_scoring",
    "explain",
    "serving",
    "crash",
    "soak",
    "soak_baseline",
    "fuzz",
]


def main() -> None:
    root = Path(__file__).resolve().parent
    parts = sorted((root / "results").glob("*.md"), key=lambda p: (ORDER + [p.stem]).index(p.stem))
    header = (
        "# Benchmarks\n\nMeasured on the project's 2-core machine; each benchmark runs its baseline in the same "
        "process or run, and reports medians and ratios (the machine is noisy). Re-run with "
        "`.venv/bin/python -m benchmarks.<name>`; each writes `benchmarks/results/<name>.md`, and "
        "`python -m benchmarks.collect` rebuilds this page.\n\n"
        "The training and explain runs below used feature set v1.0.0 (70 after-contact features); "
        "v1.1.0 (69) drops `agent_known_outcomes`, one integer column, and they were not re-run. "
        "The features and serving runs use v1.1.0.\n"
    )
    body = "\n".join(p.read_text().strip() + "\n" for p in parts)
    (root.parent / "docs" / "benchmarks.md").write_text(header + "\n" + body)


if __name__ == "__main__":
    main()
