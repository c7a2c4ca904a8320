"""Large batches are built in customer-hash chunks to bound memory: the rows must not change."""

from __future__ import annotations

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
    assert pipeline._chunk_bits(sim.contacts) >= 3  # the test would be vacuous without chunks
    chunked = pipeline.build_features(
        sim.contacts, sim.orders, sim.customers, rates=rates, moment=moment
    )
    assert chunked.height == sim.contacts.height
    assert_frame_equal(single, chunked)
