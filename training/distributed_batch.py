"""`cto score DATA_DIR --dask`: contract data scored on a Dask cluster, one task per partition.

The same job as :func:`training.batch.score_contacts` (same features, same champions, same
scores), spread over workers like ``cto features --dask`` (:mod:`features.distributed`):

1. **Partition** the inputs by customer hash through storage (one task per input slice);
2. **Rates, global**: the rate step sharded by time
   (:func:`features.rate_shards.sharded_rates`, as ``cto features --dask`` runs it): each
   partition's rate columns end up in the work directory, no task holding more than one
   partition or one time shard;
3. **Features and scores** (one task per partition): the partition's rates read from the
   shards' answers, its features, the contacts of ``[since, until]`` scored by the registered
   champions (also sent once to every worker), a partition's scores returned to the client,
   which appends them to the output file partition by partition: no process ever holds more
   than a partition.

Rows come out grouped by partition (one process: by customer-hash chunk), each contact's row
identical to the one-process run (tests/integration/test_dask.py). The data directory must hold
validated Parquet tables on storage every worker sees (docs/scale-out.md).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from features.errors import CTOError
from features.settings import Settings

if TYPE_CHECKING:
    from distributed import Client

    from features.rate_shards import ShardedRates
    from training.batch import LoadedModel, RoutingRules, ScoreResult


def _score_partition(
    work_dir: str,
    part: int,
    rates: ShardedRates,
    models: dict[str, LoadedModel],
    options: dict,
) -> pl.DataFrame | None:
    """One partition's features, its contacts of the period scored (None: none in the period)."""
    from features.distributed import _partition_tables, with_rates
    from features.pipeline import build_features
    from training.batch import _period_filter, _score_chunk
    from training.data import with_data_columns

    tables = _partition_tables(Path(work_dir), part)
    contacts = tables["contacts"]
    carried, on_contacts = with_rates(contacts, rates, part)
    features = build_features(
        carried,
        tables["orders"],
        tables["customers"],
        on_contacts,
        options["feature_moment"],
        journey_gap_days=options["journey_gap_days"],
        horizon_days=options["horizon_days"],
    ).filter(_period_filter(options["since"], options["until"]))
    pieces = []
    for offset in range(0, features.height, options["chunk_rows"]):
        part_rows = with_data_columns(
            features.slice(offset, options["chunk_rows"]), contacts, options["data_columns"]
        )
        scored = _score_chunk(
            part_rows,
            models,
            options["moment"],
            options["explain"],
            options["threads"],
            rules=options["rules"],
        )
        if options["mismatched"]:
            scored = scored.with_columns(pl.lit(True).alias("model_data_mismatch"))
        pieces.append(scored)
    return pl.concat(pieces) if pieces else None


def directory_schema_profile(data_dir: Path) -> tuple[dict, int]:
    """The data profile of validated Parquet tables, read from their schemas and a scan (no
    table is loaded on the client), and the number of contacts."""
    from features.distributed import input_files
    from training.data import directory_inputs, schema_digest, schema_of

    scans = {name: pl.scan_parquet(files) for name, files in input_files(data_dir).items()}
    empty = {name: pl.DataFrame(schema=scan.collect_schema()) for name, scan in scans.items()}
    inputs = directory_inputs(data_dir, empty)
    first, last, contacts = (
        scans["contacts"]
        .select(
            pl.col("started_at").min().alias("first"),
            pl.col("started_at").max().alias("last"),
            pl.len(),
        )
        .collect()
        .row(0)
    )
    if not contacts:
        raise CTOError(f"{data_dir}: no contacts to score")
    schema = schema_of(empty)
    profile = {
        "source": inputs.source,
        "source_kind": inputs.source_kind,
        "schema": schema,
        "schema_digest": schema_digest(schema),
        "span": {"from": first.isoformat(), "until": last.isoformat()},
        "rows": {name: scan.select(pl.len()).collect().item() for name, scan in scans.items()},
        "arrival_columns": list(inputs.arrival_columns),
    }
    return profile, contacts


def score_contacts_dask(  # noqa: PLR0913, PLR0917 (mirrors score_contacts)
    client: Client,
    data_dir: Path | str,
    settings: Settings,
    out: Path | str,
    moment: str,
    since: date | None,
    until: date | None,
    explain: int,
    allow_other_data: bool,
    chunk_rows: int,
    progress: bool,
    log: Callable[[str], None] | None,
    rules: RoutingRules | None,
    n_partitions: int | None = None,
) -> ScoreResult:
    """:func:`training.batch.score_contacts` on the cluster of ``client``."""
    from features.distributed import (
        compute_rates_dask,
        default_partitions,
        partition_inputs,
        worker_count,
    )
    from training.batch import (
        MOMENT_TASKS,
        Progress,
        ScoreResult,
        _period_filter,
        _write_chunks,
        champions,
        check_models_fit_data,
    )

    say = log or (lambda _m: None)
    started = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    if moment not in MOMENT_TASKS:
        raise CTOError(f"--moment {moment!r}: choose arrival or after_contact")
    if not data_dir.is_dir():
        raise CTOError(f"data directory {data_dir} does not exist")
    profile, contacts = directory_schema_profile(data_dir)
    models = champions(settings, moment, say)
    mismatches = check_models_fit_data(list(models.values()), profile, allow_other_data)
    from features.distributed import input_files

    selected = (
        pl.scan_parquet(input_files(data_dir)["contacts"])
        .filter(_period_filter(since, until))
        .select(pl.len())
        .collect()
        .item()
    )
    if selected == 0:
        span = profile["span"]
        raise CTOError(
            f"no contacts between {since or 'the start'} and {until or 'the end'}: the data's "
            f"contacts run {span['from'][:10]} to {span['until'][:10]}"
        )
    n_partitions = n_partitions or default_partitions(contacts, worker_count(client))
    work_dir = out.parent / f".partitions-{out.name}"
    if work_dir.exists():
        shutil.rmtree(work_dir)
    options = {
        "moment": moment,
        "feature_moment": "after_contact" if moment == "after_contact" else "arrival",
        "since": since,
        "until": until,
        "explain": explain,
        "threads": settings.num_threads,
        "rules": rules,
        "mismatched": bool(mismatches),
        "chunk_rows": chunk_rows,
        "journey_gap_days": settings.journey_gap_days,
        "horizon_days": settings.horizon_days,
        "data_columns": sorted(
            {
                c
                for m in models.values()
                for c in (m.card.get("feature_set") or {}).get("data_columns", [])
            }
        ),
    }
    bar = Progress(progress, selected)
    try:
        say(f"{selected:,} contacts to score on {n_partitions} customer-hash partitions")
        out.parent.mkdir(parents=True, exist_ok=True)
        partition_inputs(client, data_dir, work_dir, n_partitions)
        say(f"rates: labelling {n_partitions} partitions, then the global step")
        rates = compute_rates_dask(client, work_dir, n_partitions, settings.horizon_days)
        shared = client.scatter(models, broadcast=True)
        futures = [
            client.submit(_score_partition, str(work_dir), part, rates, shared, options, pure=False)
            for part in range(n_partitions)
        ]

        def chunks() -> Iterator[pl.DataFrame]:
            # In partition order; later partitions keep running meanwhile.
            for future in futures:
                scored = future.result()
                future.release()
                if scored is not None:
                    bar.step(scored.height)
                    yield scored

        rows = _write_chunks(chunks(), out)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return ScoreResult(
        out=out,
        rows=rows,
        models=[m.label for m in models.values()],
        seconds=time.perf_counter() - started,
        mismatches=mismatches,
    )
