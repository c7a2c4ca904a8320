"""A one-process batch job's validated inputs, spilled to disk by customer-hash chunk.

A batch job (``cto features``, ``cto score DATA_DIR``) validates its inputs whole, then never
needs them whole again: every per-customer feature reads only its customer's rows, and the global
rate step needs only each contact's outcome in integers (:mod:`features.rates`). So after
validation the accepted rows are written chunk by chunk (the customer-hash chunks of the feature
pass, :func:`features.partitions.hash_chunk`) to uncompressed Arrow IPC files in a work directory,
and the tables are let go; every later pass reads one chunk (or a few) at a time. Peak memory is
then validation's own, not the inputs plus the rate step or the feature pass. The directory is
removed when the job ends, also on an error.

The chunks are those :func:`features.pipeline.write_feature_files` cuts in memory (same rows, same
order), so the files written from them are identical to the in-memory job's.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.partitions import HashChunks
from features.rate_shards import SHARD_CONTACTS, in_threads, sharded_rates
from features.rates import DEFAULT_PRIOR_STRENGTH, RatesOnContacts, rate_contact_columns

TABLES = ("contacts", "orders", "customers")
# Contacts per group of chunks the rate step labels or looks up at once: fewer, larger calls
# (a lookup merges its queries with whole tables) within a bounded working set.
GROUP_CONTACTS = 1_000_000
# Rate step tasks (groups, time shards) run at once: two hold about twice one's working set
# (~300-450 MB a 2M-contact shard) and keep both cores of a small machine busy.
RATE_WORKERS = 2


@dataclass
class SpilledInputs:
    """Validated tables on disk, one Arrow IPC file per table and customer-hash chunk.

    ``get(chunk)`` gives a chunk's ``contacts, orders, customers`` (None: no contact in it), the
    contacts carrying their rate columns once :meth:`carry_rates` gave them.
    """

    directory: Path
    chunks: int
    contacts: dict[int, int]  # chunk -> contacts in it (chunks with none are left out)
    schemas: dict[str, pl.Schema]
    rates: dict[int, pl.DataFrame] = field(default_factory=dict)
    on_contacts: RatesOnContacts | None = None

    def _path(self, table: str, chunk: int) -> Path:
        return self.directory / table / f"chunk-{chunk:05d}.arrow"

    def read(self, table: str, chunk: int, columns: list[str] | None = None) -> pl.DataFrame:
        """A table's rows of one chunk (an empty frame of its schema when it has none)."""
        path = self._path(table, chunk)
        if not path.is_file():
            empty = pl.DataFrame(schema=self.schemas[table])
            return empty if columns is None else empty.select(columns)
        return pl.read_ipc(path, columns=columns)

    @property
    def height(self) -> int:
        return sum(self.contacts.values())

    def get(self, chunk: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None] | None:
        if chunk not in self.contacts:
            return None
        contacts = self.read("contacts", chunk)
        if self.on_contacts is not None:
            # agent_id only keys the agent rate, which the contacts now carry.
            contacts = contacts.drop("agent_id", strict=False).hstack(self.rates[chunk])
        customers = None  # no table or no row in this chunk, as the in-memory chunks say
        if self._path("customers", chunk).is_file():
            customers = self.read("customers", chunk)
        return contacts, self.read("orders", chunk), customers

    def groups(self) -> Iterator[list[int]]:
        """Runs of consecutive chunks of about GROUP_CONTACTS contacts together."""
        group, size = [], 0
        for chunk in sorted(self.contacts):
            group.append(chunk)
            size += self.contacts[chunk]
            if size >= GROUP_CONTACTS:
                yield group
                group, size = [], 0
        if group:
            yield group

    def carry_rates(
        self,
        horizon_days: int,
        prior_strength: float = DEFAULT_PRIOR_STRENGTH,
        *,
        write_to: Path | str | None = None,
    ) -> RatesOnContacts:
        """The global rate step over the spilled chunks; afterwards every chunk's contacts carry
        their rate columns (:data:`features.rates.RATE_COLUMNS`, held in memory: 24 bytes a
        contact). Returns the ``rates`` argument of the feature pipeline that reads them.

        The same functions as the Dask path, two at a time in threads
        (:func:`features.rate_shards.sharded_rates`, :func:`~features.rate_shards.in_threads`):
        each group of chunks (a set of whole customers) is a partition, the time shards live in
        the spill directory, the tables are written to ``write_to``.
        """
        columns = rate_contact_columns(self.schemas["contacts"])
        # No contact at all: one empty group still gives (empty) tables.
        groups = list(self.groups()) or [[0]]

        def read_times(group: int) -> pl.Series:
            return pl.concat([self.read("contacts", c, ["started_at"]) for c in groups[group]])[
                "started_at"
            ]

        def read_partition(group: int) -> tuple[pl.DataFrame, pl.DataFrame]:
            return (
                pl.concat([self.read("contacts", c, columns) for c in groups[group]]),
                pl.concat([self.read("orders", c) for c in groups[group]]),
            )

        workers = min(RATE_WORKERS, os.cpu_count() or 1)
        map_ = in_threads(workers)
        # Whole rounds of shards (a multiple of the workers): no core idles through the last.
        shards = max(1, workers * math.ceil(math.ceil(self.height / SHARD_CONTACTS) / workers))
        sharded = sharded_rates(
            map_,
            read_times,
            read_partition,
            parts=len(groups),
            directory=self.directory / "rates",
            horizon_days=horizon_days,
            prior_strength=prior_strength,
            write_to=write_to,
            shard_contacts=max(1, math.ceil(self.height / shards)),
        )
        heights = [[self.contacts.get(c, 0) for c in group] for group in groups]
        found = map_(
            sharded.of_partition, [(index, sum(heights[index])) for index in range(len(groups))]
        )
        for group, sizes, rates in zip(groups, heights, found, strict=True):
            offset = 0
            for chunk, height in zip(group, sizes, strict=True):
                self.rates[chunk] = rates.slice(offset, height)
                offset += height
        self.on_contacts = RatesOnContacts(horizon_days, prior_strength)
        return self.on_contacts


def contact_rates(
    contacts: pl.DataFrame,
    orders: pl.DataFrame,
    horizon_days: int,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
    *,
    write_to: Path | str | None = None,
) -> pl.DataFrame:
    """The rate columns (:data:`features.rates.RATE_COLUMNS`) of every contact, in input order,
    by the batch job's own global step: the tables spilled to a temporary directory and
    :meth:`SpilledInputs.carry_rates` run on them (rate files written to ``write_to``).

    Exactly what :func:`features.rates.join_rates` gives the contacts with the tables of
    ``compute_rates(rate_inputs(contacts, orders, horizon_days))`` (tests check it).
    """
    with (
        tempfile.TemporaryDirectory(prefix="cto-rates-") as work,
        spilled(
            {"contacts": contacts.with_row_index("_input_row"), "orders": orders}, Path(work)
        ) as inputs,
    ):
        inputs.carry_rates(horizon_days, prior_strength, write_to=write_to)
        # No contact at all: the step's one empty group still gives the (empty) columns.
        found = pl.concat([inputs.rates[c] for c in sorted(inputs.rates)])
        chunks = sorted(inputs.contacts)
        if not chunks:
            return found
        rows = pl.concat([inputs.read("contacts", c, ["_input_row"]) for c in chunks])
    # Each chunk holds its contacts in input order; the chunks interleave: sort them back.
    return found.hstack(rows).sort("_input_row").drop("_input_row")


def chunk_bits_for(contacts: int) -> int:
    """The chunking of :func:`features.pipeline.write_feature_files` for this many contacts."""
    from features.pipeline import sink_chunk_bits

    return sink_chunk_bits(contacts)


@contextmanager
def spilled(tables: dict[str, pl.DataFrame], near: Path) -> Iterator[SpilledInputs]:
    """The ``tables`` (contacts, orders, customers) written by customer-hash chunk to a new
    directory in ``near``, removed on exit. Each table is removed from ``tables`` once written,
    so it is freed as soon as the caller holds no other reference to it."""
    near.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=".cto-spill-", dir=near))
    try:
        yield _write(tables, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write(tables: dict[str, pl.DataFrame], directory: Path) -> SpilledInputs:
    bits = chunk_bits_for(tables["contacts"].height)
    chunks = 1 << bits
    schemas, heights = {}, {}
    # Each chunk is written in a second thread (Polars writes without the GIL) while the next is
    # cut: the writes overlap the filtering instead of following it. One write at a time is in
    # flight, so at most one more chunk is held.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cto-spill") as writer:
        pending: Future | None = None
        for name in TABLES:
            frame = tables.pop(name, None)
            if frame is None:
                continue
            schemas[name] = frame.schema
            (directory / name).mkdir()
            parts = HashChunks(frame, bits)
            del frame  # held by `parts` only, so freed once this table is written
            for chunk in range(chunks):
                part = parts.get(chunk)
                if part.height == 0:
                    continue
                if name == "contacts":
                    heights[chunk] = part.height
                if pending is not None:
                    pending.result()
                pending = writer.submit(
                    part.write_ipc,
                    directory / name / f"chunk-{chunk:05d}.arrow",
                    compression="uncompressed",
                )
            del parts, part
        if pending is not None:
            pending.result()
    return SpilledInputs(directory=directory, chunks=chunks, contacts=heights, schemas=schemas)
