"""The fast paths of the global rate step give exactly what the plain definitions give.

- ``label_conversions`` (one as-of join, frames sorted by time only) against ``label_contacts``;
- ``compute_rates`` (run ends of integer sorts) against a group-by written from its docstring;
- the composite-key as-of join against ``join_asof(by=key)`` on the same tables.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import rates as rates_module
from features.labels import label_contacts, label_conversions
from features.rates import KNOWN_AT, compute_rates, join_rates, rate_inputs
from features.simulate import simulate


@pytest.fixture(scope="module")
def world():
    sim = simulate(n_contacts=5_000, seed=23)
    return sim, label_contacts(sim.contacts, sim.orders, 7, 14)


def test_label_conversions_equals_full_labels(world):
    sim, labeled = world
    fast = label_conversions(sim.contacts, sim.orders, 7)
    assert fast["contact_id"].to_list() == sim.contacts["contact_id"].to_list()  # input order
    both = labeled.select("contact_id", "converted", KNOWN_AT).join(
        fast.select("contact_id", "converted", KNOWN_AT), on="contact_id", suffix="_fast"
    )
    assert both.height == sim.contacts.height
    assert both["converted"].sum() > 100  # not vacuous
    assert (both["converted"] == both["converted_fast"]).all()
    assert (both[KNOWN_AT] == both[f"{KNOWN_AT}_fast"]).all()


def test_compute_rates_equals_group_by_definition(world):
    sim, labeled = world
    rates = compute_rates(rate_inputs(sim.contacts, sim.orders, 7), horizon_days=7)
    assert_frame_equal(rates.tables["agent"], compute_rates(labeled, 7).tables["agent"])
    outcomes = labeled.select(
        KNOWN_AT,
        pl.col("converted").cast(pl.Int64),
        pl.col("intent").cast(pl.String).alias("key"),
    )
    expected_global = (
        outcomes.group_by(KNOWN_AT)
        .agg(pl.len().alias("outcomes"), pl.col("converted").sum().alias("conversions"))
        .sort(KNOWN_AT)
        .with_columns(pl.col("outcomes").cum_sum(), pl.col("conversions").cum_sum())
    )
    assert_frame_equal(rates.global_rate.drop("rate"), expected_global)
    expected_intent = (
        outcomes.group_by("key", KNOWN_AT)
        .agg(pl.len().alias("outcomes"), pl.col("converted").sum().alias("conversions"))
        .sort("key", KNOWN_AT)
        .with_columns(
            pl.col("outcomes").cum_sum().over("key"), pl.col("conversions").cum_sum().over("key")
        )
    )
    assert_frame_equal(
        rates.tables["intent"].select("key", KNOWN_AT, "outcomes", "conversions"),
        expected_intent,
    )


def test_composite_join_equals_join_by_key(world, monkeypatch):
    sim, labeled = world
    rates = compute_rates(labeled, 7)
    names = ("intent", "channel", "agent")
    fast = join_rates(sim.contacts, rates, names)
    assert rates_module._rate_lookup(rates).composite is not None
    # Without the composite key (as when keys and time need more than 62 bits).
    monkeypatch.setattr(rates_module, "_composite_tables", lambda tables: None)
    rates_module._LOOKUPS.clear()
    plain = join_rates(sim.contacts, rates, names)
    assert rates_module._rate_lookup(rates).composite is None
    columns = [f"_rate_{n}" for n in names] + [f"_rate_{n}_outcomes" for n in names]
    assert all(nulls < sim.contacts.height for nulls in fast.select(columns).null_count().row(0))
    assert_frame_equal(fast.select(columns), plain.select(columns))
    rates_module._LOOKUPS.clear()


def test_rates_without_any_agent_key():
    # Data without agents (every contact handled by an agent with no id): an empty agent table.
    import polars as pl

    from features.rates import compute_rates

    labeled = pl.DataFrame(
        {
            "started_at": pl.datetime_range(
                pl.datetime(2026, 1, 1, time_zone="UTC"),
                pl.datetime(2026, 1, 4, time_zone="UTC"),
                "1d",
                eager=True,
            ),
            "converted": [True, False, True, False],
            "intent": ["pricing"] * 4,
            "channel": ["phone"] * 4,
            "agent_id": pl.Series([None] * 4, dtype=pl.String),
            "handled_by": ["agent"] * 4,
        }
    )
    rates = compute_rates(labeled, 7)
    assert rates.tables["agent"].height == 0
    assert rates.tables["intent"]["outcomes"].to_list() == [1, 2, 3, 4]


@pytest.mark.parametrize("with_agents", [True, False])
def test_contact_rates_equal_the_joined_tables(world, tmp_path, with_agents, monkeypatch):
    """The batch job's global step (compact, chunked, written as it goes) against the tables."""
    from features import pipeline, spill
    from features.spill import contact_rates

    # Chunks of a few hundred contacts and groups of ~1,500: the step's partitions are several.
    monkeypatch.setattr(pipeline, "SINK_CHUNK_ROWS", 400)
    monkeypatch.setattr(pipeline, "SINK_MIN_CHUNK_ROWS", 100)
    monkeypatch.setattr(spill, "GROUP_CONTACTS", 1_500)
    from features.rates import RATE_COLUMNS, RatesOnContacts, RateTables

    sim, _ = world
    contacts = sim.contacts if with_agents else sim.contacts.drop("agent_id")
    tables = compute_rates(rate_inputs(contacts, sim.orders, 7), horizon_days=7)
    # As the feature pipeline joins them: its rows always have agent_id (null when absent).
    expected = join_rates(
        contacts.with_columns(
            pl.col("agent_id") if with_agents else pl.lit(None, pl.String).alias("agent_id")
        ),
        tables,
        ("agent", "intent", "channel"),
    ).select(RATE_COLUMNS)
    got = contact_rates(contacts, sim.orders, 7, write_to=tmp_path / "rates")
    assert_frame_equal(got, expected, check_exact=True)
    assert got["_rate_intent"].null_count() < got.height // 2  # not vacuous
    # Without agent ids only the bots have an agent rate (the global rate: no agent table).
    assert got["_rate_agent"].null_count() < got.height
    # The files are the tables' own (RateTables.write), read back as RateTables.
    written = RateTables.read(tmp_path / "rates")
    assert sorted(written.tables) == sorted(tables.tables)
    for name, table in tables.tables.items():
        assert_frame_equal(written.tables[name], table, check_exact=True)
    assert_frame_equal(written.global_rate, tables.global_rate, check_exact=True)
    # Contacts carrying their rates give the features the joined tables give.
    carried = contacts.hstack(got)
    for moment in ("arrival", "after_contact"):
        assert_frame_equal(
            pipeline.build_features(
                carried, sim.orders, sim.customers, RatesOnContacts(7, 20.0), moment
            ),
            pipeline.build_features(contacts, sim.orders, sim.customers, tables, moment),
            check_exact=True,
        )


def test_contact_rates_of_no_contact_are_empty_columns(world, tmp_path):
    """No contact at all: no rate row, the columns of a contact's rates, and (empty) tables."""
    from features.rates import RATE_COLUMNS, RateTables
    from features.spill import contact_rates

    sim, _ = world
    got = contact_rates(sim.contacts.clear(), sim.orders.clear(), 7, write_to=tmp_path / "rates")
    some = contact_rates(sim.contacts.head(50), sim.orders, 7)
    assert got.height == 0
    assert got.schema == some.schema and list(got.columns) == list(RATE_COLUMNS)
    written = RateTables.read(tmp_path / "rates")
    assert written.global_rate.height == 0
    assert all(table.height == 0 for table in written.tables.values())
