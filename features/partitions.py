"""Where a data directory's tables are and which customer-hash partition a row belongs to.

Both the per-customer step (:mod:`features.pipeline`) and the global step (:mod:`features.rates`)
read partitions this way, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from features.errors import CTOError


def scan_tables(directory: Path) -> dict[str, pl.LazyFrame]:
    """Lazy scans of ``contacts``/``orders``/``customers`` (.parquet or .csv) in ``directory``."""
    scans = {}
    for name in ("contacts", "orders", "customers"):
        for suffix in (".parquet", ".csv"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                scans[name] = (
                    pl.scan_parquet(path)
                    if suffix == ".parquet"
                    else pl.scan_csv(path, try_parse_dates=True)
                )
                break
    for name in ("contacts", "orders"):
        if name not in scans:
            raise CTOError(f"{directory}: no {name}.parquet or {name}.csv")
    return scans


def customer_partition(n_partitions: int) -> pl.Expr:
    """Partition number of each row's customer (stable within a Polars version)."""
    return (pl.col("customer_id").hash(seed=0) % n_partitions).cast(pl.Int64)


def hash_chunk(chunk_bits: int) -> pl.Expr:
    """Chunk number of each row's customer among ``2**chunk_bits`` (``chunk_bits`` >= 1): the top
    bits of the customer's hash, so chunks in order are rows in hash order (the feature pass's
    chunks, in memory or spilled to disk). Hashed as the pipeline hashes it: of the id as a
    string (the contract dtype)."""
    return (pl.col("customer_id").cast(pl.String).hash(seed=0) // (1 << (64 - chunk_bits))).cast(
        pl.Int64
    )


class HashChunks:
    """A frame's rows by :func:`hash_chunk` (``2**chunk_bits`` chunks), one chunk at a time.

    Filtering each chunk out of the whole frame would scan every row once per chunk (64 scans of
    10M contacts: ~3 s CPU, measured). Instead the rows of a group of consecutive chunks (the top
    half of the chunk bits) are filtered out once, and each chunk out of its group: two scans in
    all when the chunks are asked for in order, and at most one group's rows copied at a time.
    Row order is kept: a chunk's rows are exactly ``frame.filter(hash_chunk(chunk_bits) == chunk)``.
    ``chunk_bits`` 0: one chunk, the frame itself.
    """

    def __init__(self, frame: pl.DataFrame, chunk_bits: int) -> None:
        self.frame = frame
        self.chunk = frame.select(hash_chunk(chunk_bits)).to_series() if chunk_bits else None
        self._group_bits = chunk_bits // 2
        self._low_bits = chunk_bits - self._group_bits  # a chunk's bits below its group's
        self._group: tuple[int, pl.DataFrame, pl.Series] | None = None

    def get(self, chunk: int) -> pl.DataFrame:
        """The rows of ``chunk`` (an empty frame when it has none)."""
        if self.chunk is None:
            return self.frame
        group = chunk >> self._low_bits
        if self._group is None or self._group[0] != group:
            self._group = None  # the previous group is let go before the next is copied
            if self._group_bits == 0:  # one group: the whole frame
                self._group = (group, self.frame, self.chunk)
            else:
                mask = (self.chunk // (1 << self._low_bits)) == group
                self._group = (group, self.frame.filter(mask), self.chunk.filter(mask))
        _, rows, chunks = self._group
        return rows.filter(chunks == chunk)
