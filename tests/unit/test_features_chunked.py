"""Large batches are built in customer-hash chunks to bound memory: the rows must not change.

The same holds for write_features, which streams the chunks into a Parquet file.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import pipeline
from features.labels import label_contacts
from features.rates import compute_rates
from features.simulate import simulate


@pytest.fixture(scope="module")
def small_world():
    sim = simulate(n_contacts=6_000, seed=11)
    labeled = label_contacts(sim.contacts, sim.orders, 7, 14)
    return sim, compute_rates(labeled, 7)


@pytest.mark.parametrize("moment", ["arrival", "after_contact"])
def test_chunked_build_equals_single_pass(small_world, moment, monkeypatch):
    sim, rates = small_world
    single = pipeline.build_features(
        sim.contacts, sim.orders, sim.customers, rates=rates, moment=moment
    )
    # Force chunking on a small batch: 6,000 contacts in chunks of about 700.
    monkeypatch.setattr(pipeline, "_CHUNK_ABOVE", 1_000)
    monkeypatch.setattr(pipeline, "_CHUNK_ROWS", 700)
    # The test would be vacuous without chunks.
    assert pipeline._chunk_bits(sim.contacts, pipeline._CHUNK_ABOVE, pipeline._CHUNK_ROWS) >= 3
    chunked = pipeline.build_features(
        sim.contacts, sim.orders, sim.customers, rates=rates, moment=moment
    )
    assert chunked.height == sim.contacts.height
    assert_frame_equal(single, chunked)


@pytest.mark.parametrize("chunk_rows", [500, 100_000])
def test_write_features_equals_build_features(small_world, chunk_rows, tmp_path):
    sim, rates = small_world
    built = pipeline.build_features(
        sim.contacts, sim.orders, sim.customers, rates=rates, moment="after_contact"
    )
    calls: list[tuple[int, int, int]] = []
    path = tmp_path / "features.parquet"
    rows = pipeline.write_features(
        sim.contacts,
        sim.orders,
        path,
        sim.customers,
        rates,
        "after_contact",
        chunk_rows=chunk_rows,
        progress=lambda done, total, contacts: calls.append((done, total, contacts)),
    )
    written = pl.read_parquet(path)
    assert rows == sim.contacts.height == written.height
    # Same rows, order and dtypes (Enums survive the Parquet sink).
    assert_frame_equal(built, written)
    assert sum(contacts for _, _, contacts in calls) == rows
    expected_chunks = 1 if chunk_rows >= sim.contacts.height else 16
    assert calls[-1][1] == expected_chunks
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)


def test_write_features_lazy_input_and_no_orders(small_world, tmp_path):
    sim, _ = small_world
    path = tmp_path / "arrival.parquet"
    orders = sim.orders.clear()
    rows = pipeline.write_features(
        sim.contacts.lazy(), orders.lazy(), path, moment="arrival", chunk_rows=1_000
    )
    expected = pipeline.build_features(sim.contacts, orders, moment="arrival")
    assert rows == expected.height
    assert_frame_equal(expected, pl.read_parquet(path))


def test_both_moments_from_one_pass_equal_each_moment_alone(small_world, tmp_path):
    # after_contact holds every arrival feature with the same definition: the arrival file,
    # a column subset of the one after-contact pass, must equal building arrival alone.
    sim, rates = small_world
    paths = {m: tmp_path / f"{m}.parquet" for m in ("arrival", "after_contact")}
    rows = pipeline.write_feature_files(
        sim.contacts, sim.orders, paths, sim.customers, rates, chunk_rows=1_500
    )
    assert rows == sim.contacts.height
    for moment, path in paths.items():
        alone = pipeline.build_features(
            sim.contacts, sim.orders, sim.customers, rates=rates, moment=moment
        )
        assert_frame_equal(alone, pl.read_parquet(path), check_exact=True)
    assert "agent_conversion_rate" not in pl.read_parquet_schema(paths["arrival"])


def test_rates_reduced_for_joining_join_the_same(small_world, tmp_path):
    sim, rates = small_world
    lean = rates.for_joining()
    assert lean.join_only is not None and all(t.height == 0 for t in lean.tables.values())
    for moment in ("arrival", "after_contact"):
        assert_frame_equal(
            pipeline.build_features(sim.contacts, sim.orders, sim.customers, lean, moment),
            pipeline.build_features(sim.contacts, sim.orders, sim.customers, rates, moment),
            check_exact=True,
        )
    with pytest.raises(Exception, match="reduced for joining"):
        lean.write(tmp_path / "rates")
