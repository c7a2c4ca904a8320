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
