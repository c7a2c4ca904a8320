"""Simulated tables: reproducible to the byte, in the data contract, and true to their truth table."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from features.schema import TABLES
from features.simulate import DRIVERS, STRONG_DRIVER, simulate
from features.validate import validate_frames

FILES = ("contacts", "orders", "customers", "truth")
TRUTH_COLUMNS = (
    "contact_id",
    "p_convert",
    "converted",
    "true_dropoff_reason",
    "planted_driver",
    "driver_strength",
)


def digests(directory) -> dict[str, str]:
    return {
        name: hashlib.sha256((directory / f"{name}.parquet").read_bytes()).hexdigest()
        for name in FILES
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    first = simulate(n_contacts=5_000, seed=3).write(tmp_path / "a")
    again = simulate(n_contacts=5_000, seed=3).write(tmp_path / "b")
    other = simulate(n_contacts=5_000, seed=4).write(tmp_path / "c")
    assert digests(first) == digests(again)
    assert all(
        a != b for a, b in zip(digests(first).values(), digests(other).values(), strict=True)
    )


def test_tables_have_the_contract_dtypes(sim_data):
    for name in ("contacts", "orders", "customers"):
        frame = getattr(sim_data, name)
        assert dict(frame.schema) == TABLES[name].polars_schema, name


def test_validation_accepts_every_row(sim_data):
    result = validate_frames(
        {"contacts": sim_data.contacts, "orders": sim_data.orders, "customers": sim_data.customers}
    )
    assert sum(frame.height for frame in result.rejects.values()) == 0, result.summary
    assert result.tables["contacts"].height == sim_data.contacts.height


def test_written_files_read_back_identically(sim_data, sim_dir):
    for name in FILES:
        assert pl.read_parquet(sim_dir / f"{name}.parquet").equals(getattr(sim_data, name)), name
    assert (sim_dir / "scenario.json").exists()


def test_exact_contact_count_and_window(sim_data):
    contacts = sim_data.contacts
    assert contacts.height == 40_000
    assert contacts["contact_id"].is_unique().all()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    assert contacts["started_at"].min() >= start
    assert contacts["started_at"].max() < start + timedelta(weeks=26)
    assert sim_data.orders["ordered_at"].max() <= start + timedelta(weeks=26, days=7)
    # Every referenced customer exists, every attributed contact exists.
    assert contacts["customer_id"].is_in(sim_data.customers["customer_id"].implode()).all()
    assert sim_data.orders["customer_id"].is_in(sim_data.customers["customer_id"].implode()).all()
    attributed = sim_data.orders["contact_id"].drop_nulls()
    assert attributed.is_in(contacts["contact_id"].implode()).all()


def test_start_and_weeks_are_respected():
    start = datetime(2025, 6, 2, tzinfo=UTC)
    data = simulate(n_contacts=2_000, seed=1, start=start, weeks=8)
    assert data.contacts.height == 2_000
    assert data.contacts["started_at"].min() >= start
    assert data.contacts["started_at"].max() < start + timedelta(weeks=8)


def test_truth_columns_and_consistency(sim_data, sim_dir):
    truth = sim_data.truth
    assert truth.columns[: len(TRUTH_COLUMNS)] == list(TRUTH_COLUMNS)
    assert truth["contact_id"].equals(sim_data.contacts["contact_id"])
    assert set(truth["planted_driver"].cast(pl.String).unique()) <= set(DRIVERS)
    assert truth["p_convert"].is_between(0, 1).all()
    # Non-converters have a true reason, converters none; the recorded reason is sparse.
    assert (
        truth.filter(pl.col("converted"))["true_dropoff_reason"].null_count()
        == truth["converted"].sum()
    )
    assert truth.filter(~pl.col("converted"))["true_dropoff_reason"].null_count() == 0
    # The driver is the most negative planted effect and "none" means no effect below -0.25.
    effects = truth.select(pl.min_horizontal(pl.col("^effect_.*$"))).to_series()
    named = truth["planted_driver"] != "none"
    assert (effects.filter(named) - truth["driver_strength"].filter(named)).abs().max() < 1e-6
    assert (truth.filter(~named)["driver_strength"] == 0).all()
    strong = (truth["driver_strength"] <= STRONG_DRIVER).mean()
    assert 0.1 < strong < 0.45
    # truth.converted is the realised label: an order within 7 days of the contact.
    labelled = (
        sim_data.contacts.select("contact_id", "customer_id", "started_at")
        .sort("customer_id", "started_at")
        .join_asof(
            sim_data.orders.select("customer_id", "ordered_at").sort("customer_id", "ordered_at"),
            left_on="started_at",
            right_on="ordered_at",
            by="customer_id",
            strategy="forward",
            check_sortedness=False,
        )
        .select(
            "contact_id",
            (pl.col("ordered_at") - pl.col("started_at") <= timedelta(days=7))
            .fill_null(False)
            .alias("label"),
        )
    )
    joined = truth.join(labelled, on="contact_id")
    assert (joined["converted"] == joined["label"]).all()


def test_p_convert_is_calibrated(sim_data):
    """p_convert is the true probability: realised rates match it in every decile."""
    deciles = (
        sim_data.truth.with_columns(
            (pl.col("p_convert").rank("ordinal") * 10 // (pl.len() + 1)).alias("decile")
        )
        .group_by("decile")
        .agg(
            pl.col("p_convert").mean().alias("expected"),
            pl.col("converted").mean().alias("seen"),
            pl.len(),
        )
    )
    # Binomial noise on ~4,000 contacts per decile: allow 4 standard errors.
    tolerance = 4 * (deciles["expected"] * (1 - deciles["expected"]) / deciles["len"]).sqrt()
    assert ((deciles["seen"] - deciles["expected"]).abs() <= tolerance + 0.005).all(), deciles


@pytest.mark.parametrize("n_contacts", [1, 137])
def test_tiny_runs_give_exactly_n_contacts(n_contacts):
    data = simulate(n_contacts=n_contacts, seed=9)
    assert data.contacts.height == n_contacts == data.truth.height
