"""The one-process batch job through the spill (inputs written by customer-hash chunk, then let
go) writes exactly the files the in-memory job writes, and leaves no spill behind."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cto.cli import main
from features import pipeline, spill
from features.labels import label_contacts
from features.partitions import HashChunks, hash_chunk
from features.rates import RatesOnContacts, RateTables, compute_rates
from features.simulate import simulate
from features.spill import contact_rates
from features.validate import load_and_validate

HORIZON, GAP = 7, 14


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    sim = simulate(n_contacts=4_000, seed=41)
    directory = tmp_path_factory.mktemp("spill_in")
    sim.write(directory)
    return directory


@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunks and rate groups of a few hundred contacts: many of each on a small set."""
    monkeypatch.setattr(pipeline, "SINK_CHUNK_ROWS", 250)
    monkeypatch.setattr(pipeline, "SINK_MIN_CHUNK_ROWS", 100)
    monkeypatch.setattr(spill, "GROUP_CONTACTS", 900)


def _run(data_dir, out, *extra):
    args = ["features", str(data_dir), "--out", str(out), "--horizon-days", str(HORIZON)]
    assert main([*args, "--journey-gap-days", str(GAP), *extra]) == 0


def test_spilled_job_equals_the_in_memory_job(data_dir, tmp_path, small_chunks, capsys):
    out = tmp_path / "spilled"
    _run(data_dir, out)
    assert "spill: 16 customer-hash chunks" in capsys.readouterr().out
    # The in-memory job on the same validated tables: rates of every contact, then the features
    # of both moments written chunk by chunk from the contacts carrying them.
    tables = load_and_validate(data_dir).tables
    contacts, orders = tables["contacts"], tables["orders"]
    expected = tmp_path / "in_memory"
    carried = contacts.hstack(contact_rates(contacts, orders, HORIZON, write_to=expected / "rates"))
    paths = {m: expected / f"features_{m}.parquet" for m in ("arrival", "after_contact")}
    pipeline.write_feature_files(
        carried,
        orders,
        paths,
        tables.get("customers"),
        RatesOnContacts(HORIZON, 20.0),
        journey_gap_days=GAP,
        horizon_days=HORIZON,
    )
    for path in paths.values():
        got = pl.read_parquet(out / path.name)
        assert got.height == contacts.height
        assert got["intent_conversion_rate"].null_count() < got.height // 2  # not vacuous
        assert_frame_equal(got, pl.read_parquet(path), check_exact=True)
    written, reference = RateTables.read(out / "rates"), RateTables.read(expected / "rates")
    # ...and the rate files are compute_rates' own tables.
    tables_ = compute_rates(label_contacts(contacts, orders, HORIZON, GAP), HORIZON)
    for name, table in tables_.tables.items():
        assert_frame_equal(written.tables[name], table, check_exact=True)
        assert_frame_equal(written.tables[name], reference.tables[name], check_exact=True)
    assert_frame_equal(written.global_rate, tables_.global_rate, check_exact=True)
    assert not list(out.glob(".cto-spill-*")), "the spill is removed"


def test_csv_and_single_file_outputs(data_dir, tmp_path, small_chunks):
    tables = load_and_validate(data_dir).tables
    rates = compute_rates(label_contacts(tables["contacts"], tables["orders"], HORIZON), HORIZON)
    expected = pipeline.build_features(
        tables["contacts"],
        tables["orders"],
        tables.get("customers"),
        rates,
        "arrival",
        journey_gap_days=GAP,
        horizon_days=HORIZON,
    )
    _run(data_dir, tmp_path / "one.parquet", "--moment", "arrival")
    assert_frame_equal(pl.read_parquet(tmp_path / "one.parquet"), expected, check_exact=True)
    _run(data_dir, tmp_path / "one.csv", "--moment", "arrival")
    csv = pl.read_csv(tmp_path / "one.csv", try_parse_dates=True)
    assert csv.height == expected.height
    assert csv["contact_id"].cast(pl.String).to_list() == expected["contact_id"].to_list()
    assert not list(tmp_path.glob(".cto-spill-*"))


def test_spill_is_removed_on_error(data_dir, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        assert list(self.directory.glob("contacts/chunk-*.arrow")), "the inputs were spilled"
        raise RuntimeError("rate step failed")

    monkeypatch.setattr(spill.SpilledInputs, "carry_rates", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="rate step failed"):
        _run(data_dir, out)
    assert not list(out.glob(".cto-spill-*"))


def test_chunks_read_back_are_the_in_memory_chunks(data_dir, tmp_path, small_chunks):
    tables = load_and_validate(data_dir).tables
    contacts = tables["contacts"]
    bits = pipeline.sink_chunk_bits(contacts.height)
    assert bits == 4
    in_memory = pipeline._MemoryChunks(contacts, tables["orders"], tables.get("customers"), bits)
    with spill.spilled(dict(tables), tmp_path) as spilled:
        assert spilled.chunks == in_memory.chunks == 16
        assert spilled.height == contacts.height
        for chunk in range(16):
            got, want = spilled.get(chunk), in_memory.get(chunk)
            assert (got is None) == (want is None)
            if want is not None:
                for a, b in zip(got, want, strict=True):
                    assert (a is None) == (b is None)
                    if b is not None:
                        assert_frame_equal(a, b, check_exact=True)
        directory = spilled.directory
    assert not directory.exists()


@pytest.mark.parametrize("bits", [0, 1, 2, 3, 5])
def test_hash_chunks_are_the_filtered_rows(data_dir, bits):
    """Chunks cut in two steps (group, then chunk) are exactly the rows of a filter on the chunk
    number, in order, whether they are asked for in order or not."""
    contacts = load_and_validate(data_dir).tables["contacts"]
    chunk_of = contacts.select(hash_chunk(bits) if bits else pl.lit(0)).to_series()
    chunks = HashChunks(contacts, bits)
    order = list(range(1 << bits))
    for chunk in [*order, *reversed(order)]:
        assert_frame_equal(chunks.get(chunk), contacts.filter(chunk_of == chunk), check_exact=True)
    assert sum(chunks.get(c).height for c in order) == contacts.height
