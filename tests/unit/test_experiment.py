"""Switchback experiments: interval coverage on simulated experiments with a known effect, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from training.experiment import analyse_slices, simulate_switchback

DESIGN = {"days": 14, "slices_per_day": 12, "contacts_per_slice": 80, "base_ratio": 0.14}


@pytest.mark.parametrize("effect", [0.0, 0.012])
def test_cluster_robust_ci_covers_the_true_effect_about_95_percent(effect):
    rng = np.random.default_rng(11)
    reps = 600
    covered = 0
    for _ in range(reps):
        n, o, on, day, truth = simulate_switchback(rng, effect=effect, **DESIGN)
        a = analyse_slices(n, o, on, day, permutations=0)
        covered += a.ci_low <= truth <= a.ci_high
    # 600 draws: the coverage's own sd is ~0.009, so [0.92, 0.98] fails a mis-sized interval.
    assert 0.92 <= covered / reps <= 0.98


def test_contact_level_interval_would_undercover():
    """Why slices are the clusters: treating contacts as independent gives far too narrow intervals."""
    rng = np.random.default_rng(12)
    covered_naive = 0
    reps = 300
    for _ in range(reps):
        n, o, on, day, truth = simulate_switchback(rng, effect=0.01, slice_sd=0.3, **DESIGN)
        r1, r0 = o[on].sum() / n[on].sum(), o[~on].sum() / n[~on].sum()
        se = np.sqrt(r1 * (1 - r1) / n[on].sum() + r0 * (1 - r0) / n[~on].sum())
        covered_naive += abs(r1 - r0 - truth) <= 1.96 * se
    assert covered_naive / reps < 0.85


def test_randomisation_test_holds_its_size_and_has_power():
    rng = np.random.default_rng(13)
    null = [
        analyse_slices(
            *simulate_switchback(rng, effect=0.0, **DESIGN)[:4], permutations=199, seed=i
        ).p_value_randomisation
        for i in range(150)
    ]
    assert 0.01 <= np.mean(np.array(null) < 0.05) <= 0.10
    strong = [
        analyse_slices(
            *simulate_switchback(rng, effect=0.03, **DESIGN)[:4], permutations=199, seed=i
        ).p_value_randomisation
        for i in range(30)
    ]
    assert np.mean(np.array(strong) < 0.05) > 0.8


def test_experiment_cli_plans_and_analyses_a_simulated_switchback(sim_dir, tmp_path, capsys):
    from cto.cli import main
    from features.labels import label_contacts

    out = tmp_path / "exp"
    args = ["experiment", "plan", str(sim_dir), "--out", str(out), "--start", "2026-01-05"]
    assert main([*args, "--mde", "0.10", "--seed", "3"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    options = {o["slice_minutes"]: o for o in plan["options"]}
    assert plan["chosen"]["days_needed"] == min(
        o["days_needed"] for o in options.values() if o["slice_minutes"] >= 40
    )
    # Halving the effect to detect needs about 4x the slices (variance / mde^2).
    assert main([*args, "--mde", "0.05", "--out", str(tmp_path / "exp5")]) == 0
    plan5 = json.loads((tmp_path / "exp5" / "plan.json").read_text())
    ratio = plan5["chosen"]["slices_needed"] / plan["chosen"]["slices_needed"]
    assert 3.5 < ratio < 4.5

    # A logged experiment over the simulated half year: ON slices win extra orders (known effect).
    schedule = pl.read_csv(out / "schedule.csv", try_parse_dates=True)
    contacts = pl.read_parquet(sim_dir / "contacts.parquet")
    labelled = label_contacts(contacts, pl.read_parquet(sim_dir / "orders.parquet"))
    logged = labelled.select("started_at", "converted").sort("started_at")
    logged = logged.join_asof(
        schedule.with_columns(
            pl.col("slice_start", "slice_end")
            .dt.replace_time_zone("UTC")
            .cast(logged.schema["started_at"])
        ),
        left_on="started_at",
        right_on="slice_start",
    )
    rng = np.random.default_rng(5)
    lift = 0.2  # ON converts 20% of the contacts that would not have ordered
    flip = (logged["arm"] == "on").to_numpy() & (rng.random(logged.height) < lift)
    logged = logged.with_columns((pl.col("converted") | pl.Series(flip)).alias("converted"))
    table = tmp_path / "logged.parquet"
    logged.select("started_at", "converted").write_parquet(table)
    assert (
        main(
            [
                "experiment",
                "analyse",
                "--table",
                str(table),
                "--schedule",
                str(out / "schedule.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "effect" in printed and "CI" in printed
    result = json.loads((out / "analysis.json").read_text())
    truth = lift * (1 - result["ratio_off"])
    assert result["ci_low"] <= truth <= result["ci_high"]
    assert result["ci_low"] > 0 and result["p_value_randomisation"] < 0.01

    from reports.decision_value import decision_value_section

    page = decision_value_section(experiment=out / "analysis.json").render()
    assert "switchback" in page and "measured" in page


def test_experiment_analyse_names_a_bad_schedule(sim_dir, tmp_path, capsys):
    from cto.cli import main

    bad = tmp_path / "schedule.csv"
    pl.DataFrame(
        {
            "slice_start": ["2026-01-05T00:00:00"],
            "slice_end": ["2026-01-05T04:00:00"],
            "arm": ["maybe"],
        }
    ).write_csv(bad)
    assert (
        main(
            ["experiment", "analyse", str(sim_dir), "--schedule", str(bad), "--out", str(tmp_path)]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "arm" in err and "maybe" in err
