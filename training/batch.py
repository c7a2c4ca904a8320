"""Batch scoring (`cto score`): registered models applied to a data directory or a table, in chunks.

Two forms, both writing one Parquet file:

- contract tables: point-in-time features of every contact through the same code as training:
  after validation the inputs are spilled to disk by customer-hash chunk (:mod:`features.spill`),
  the global rate step runs over the chunks (every contact's rates, in integers), then
  :func:`features.pipeline.feature_chunks` one chunk at a time; the champions of one moment score
  each chunk's contacts of ``[since, until]`` and it is let go (memory after validation: the rate
  columns plus one chunk's working set). On Dask (``cto score DATA_DIR --dask``) each
  customer-hash partition is one task (:mod:`training.distributed_batch`);
- one row per contact (a table): one output row per input row, in input order, the input
  columns plus ``p_order``.

Every model carries the data it learnt from (model card ``data``: source kind and schema
digest); scoring data of another kind or schema is refused, or with ``allow_other_data`` scored
and marked in every row (``model_data_mismatch``) and on stderr.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from features.encoding import FeatureEncoding, encode
from features.errors import CTOError
from features.settings import Settings
from training.scoring import calibration_from_card
from training.tasks import (
    CALLBACK_UPLIFT,
    CONTACTS_TO_ORDER,
    CONVERSION_AFTER_CONTACT,
    CONVERSION_ARRIVAL,
    DROPOFF_REASON,
    FOLLOW_UP_UPLIFT,
)
from training.tracking import CARD_FILE, model_name, use_store

MOMENT_TASKS = {
    "arrival": (CONVERSION_ARRIVAL,),
    "after_contact": (
        CONVERSION_AFTER_CONTACT,
        DROPOFF_REASON,
        CONTACTS_TO_ORDER,
        FOLLOW_UP_UPLIFT,
        CALLBACK_UPLIFT,
    ),
}
# Output column and next-action key of each uplift model (as in the service's answer).
UPLIFT_COLUMNS = {FOLLOW_UP_UPLIFT: "follow_up", CALLBACK_UPLIFT: "callback"}
DEFAULT_CHUNK_ROWS = 100_000


@dataclass
class LoadedModel:
    """A registered model version: native booster plus its card."""

    name: str
    version: str
    alias: str | None
    card: dict
    booster: object  # lightgbm.Booster, or training.pyfunc_raw.LinearScorer (linear family)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" + (f" (@{self.alias})" if self.alias else "")

    @property
    def encoding(self) -> FeatureEncoding:
        return FeatureEncoding.from_dict(self.card)


def parse_model_ref(ref: str, default_alias: str) -> tuple[str, str | None, str | None]:
    """``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION`` -> (name, alias, version)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        if not version.isdigit():
            raise CTOError(f"--model {ref!r}: expected NAME, NAME@ALIAS or NAME/VERSION (a number)")
        return name, None, version
    return ref, default_alias, None


def load_model(
    settings: Settings, name: str, alias: str | None = None, version: str | None = None
) -> LoadedModel:
    """One registered version by alias or number; a clear error when it does not exist."""
    import mlflow

    client = use_store(settings)
    try:
        found = (
            client.get_model_version(name, version)
            if version is not None
            else client.get_model_version_by_alias(name, alias or settings.champion_alias)
        )
    except mlflow.exceptions.MlflowException as exc:
        which = f"version {version}" if version is not None else f"alias @{alias}"
        raise CTOError(
            f"model {name} {which} not found in {settings.tracking_uri}; train one with `cto train` "
            "(and --promote for the champion alias)"
        ) from exc
    uri = f"models:/{name}/{found.version}"
    with tempfile.TemporaryDirectory() as tmp:
        card_path = mlflow.artifacts.download_artifacts(f"{uri}/{CARD_FILE}", dst_path=tmp)
        card = json.loads(Path(card_path).read_text())
    from training.scoring import load_native

    booster = load_native(uri, card)
    return LoadedModel(name, str(found.version), alias if version is None else None, card, booster)


def describe_data(profile: dict) -> str:
    kind = profile.get("source_kind", "unknown")
    span = profile.get("span") or {}
    when = f", contacts {span['from'][:10]} to {span['until'][:10]}" if span.get("from") else ""
    return f"{kind} data from {profile.get('source', '?')}{when}"


def data_mismatch(card: dict, profile: dict) -> str | None:
    """Why ``profile`` is not the kind of data the model learnt from (None when it is)."""
    trained = card.get("data")
    if not trained:
        return None  # a model from before cards carried their data: nothing to compare
    reasons = []
    if trained.get("source_kind") != profile.get("source_kind"):
        reasons.append(
            f"source {profile.get('source_kind')!r}, trained on {trained.get('source_kind')!r}"
        )
    if trained.get("schema_digest") != profile.get("schema_digest"):
        ours = _columns(profile.get("schema") or {})
        theirs = _columns(trained.get("schema") or {})
        extra, missing = sorted(ours - theirs), sorted(theirs - ours)
        detail = "; ".join(
            part
            for part in (
                f"columns the model never saw: {', '.join(extra[:5])}" if extra else "",
                f"columns it learnt from that are missing: {', '.join(missing[:5])}"
                if missing
                else "",
            )
            if part
        )
        reasons.append(f"schema {profile.get('schema_digest')} != {trained.get('schema_digest')}"
                       + (f" ({detail})" if detail else " (column types differ)"))  # fmt: skip
    return "; ".join(reasons) or None


def _columns(schema: dict) -> set[str]:
    return {f"{table}.{column}" for table, columns in schema.items() for column in columns}


def check_models_fit_data(
    models: list[LoadedModel], profile: dict, allow_other_data: bool, what: str = "score"
) -> list[str]:
    """Refuse (or, allowed, warn loudly about) models trained on another kind of data."""
    problems = []
    for model in models:
        reason = data_mismatch(model.card, profile)
        if reason:
            trained = describe_data(model.card.get("data") or {})
            problems.append(f"{model.label} was trained on {trained}: {reason}")
    if problems and not allow_other_data:
        raise CTOError(
            f"refusing to {what} {describe_data(profile)} with models trained on other data: "
            + " | ".join(problems)
            + ". Train models on this data (e.g. `cto train DATA --promote --model-prefix NAME`, "
            "then --model-prefix NAME here), or pass --allow-other-data to mark every row instead"
        )
    for problem in problems:
        print(f"WARNING: scoring data the model was not trained on: {problem}", file=sys.stderr)
    return problems


class Progress:
    """One line per chunk on stderr: rows done, share, rate (silent when disabled)."""

    def __init__(self, enabled: bool, total: int, label: str = "score") -> None:
        self.enabled, self.total, self.label = enabled, total, label
        self.done = 0
        self.started = time.perf_counter()

    def step(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.started
        share = self.done / self.total if self.total else 1.0
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        print(
            f"[{self.label} {elapsed:6.1f}s] {self.done:,}/{self.total:,} contacts "
            f"({share:.0%}, {rate:,.0f}/s)",
            file=sys.stderr,
            flush=True,
        )


@dataclass
class ScoreResult:
    out: Path
    rows: int
    models: list[str]
    seconds: float
    mismatches: list[str]


def _binary_probability(model: LoadedModel, x: np.ndarray, threads: int) -> np.ndarray:
    raw = model.booster.predict(x, raw_score=True, num_threads=threads)
    return calibration_from_card(model.card).apply(np.asarray(raw))


@dataclass(frozen=True)
class RoutingRules:
    """The routing rules scores are turned into (serving.rules: the caller passes them in, because
    training never imports serving): tier floors, highest first, and the next-action function."""

    priority_floors: tuple[tuple[str, float], ...]
    next_action: Callable[..., object]
    costs: object = None  # serving.rules.ActionCosts: what a follow-up and a callback cost


def _priority(p: pl.Expr, floors: tuple[tuple[str, float], ...]) -> pl.Expr:
    expr = pl.lit(floors[-1][0])
    for tier, floor in reversed(floors[:-1]):
        expr = pl.when(p >= floor).then(pl.lit(tier)).otherwise(expr)
    return expr


def _drivers(model: LoadedModel, x: np.ndarray, k: int, threads: int) -> dict[str, np.ndarray]:
    """Top ``k`` features by absolute TreeSHAP contribution per row (log-odds)."""
    contrib = np.asarray(model.booster.predict(x, pred_contrib=True, num_threads=threads))[:, :-1]
    names = np.asarray(model.encoding.feature_names, dtype=object)
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    rows = np.arange(contrib.shape[0])[:, None]
    out: dict[str, np.ndarray] = {}
    for j in range(min(k, contrib.shape[1])):
        out[f"driver_{j + 1}"] = names[order[:, j]]
        out[f"driver_{j + 1}_effect"] = contrib[rows[:, 0], order[:, j]]
    return out


def _score_chunk(
    chunk: pl.DataFrame,
    models: dict[str, LoadedModel],
    moment: str,
    explain: int,
    threads: int,
    *,
    rules: RoutingRules | None,
) -> pl.DataFrame:
    conversion = models[MOMENT_TASKS[moment][0]]
    x = encode(chunk, conversion.encoding)
    columns: dict[str, object] = {"p_order": _binary_probability(conversion, x, threads)}
    if explain:
        columns |= _drivers(conversion, x, explain, threads)
    out = chunk.select("contact_id", "customer_id", "started_at").with_columns(
        **{name: pl.Series(name, values) for name, values in columns.items()}
    )
    if rules is not None:
        out = out.with_columns(
            _priority(pl.col("p_order"), rules.priority_floors).alias("priority")
        )
    if moment != "after_contact":
        return out
    reasons = models.get(DROPOFF_REASON)
    reason_p: np.ndarray | None = None
    if reasons is not None:
        reason_p = np.asarray(
            reasons.booster.predict(encode(chunk, reasons.encoding), num_threads=threads)
        )
        classes = np.asarray(reasons.card["class_names"], dtype=object)
        best = reason_p.argmax(axis=1)
        out = out.with_columns(
            pl.Series("dropoff_reason", classes[best], dtype=pl.String),
            pl.Series("dropoff_probability", reason_p[np.arange(len(best)), best]),
        )
    count = models.get(CONTACTS_TO_ORDER)
    if count is not None:
        further = np.asarray(
            count.booster.predict(encode(chunk, count.encoding), num_threads=threads)
        )
        out = out.with_columns(pl.Series("expected_contacts_to_order", 1.0 + further))
    out = out.with_columns(_uplift_columns(chunk, models, threads))
    if rules is None:
        return out
    return out.with_columns(_next_actions(chunk, out, models, reason_p, rules))


def _uplift_columns(
    chunk: pl.DataFrame, models: dict[str, LoadedModel], threads: int
) -> list[pl.Series]:
    """``follow_up_uplift`` / ``callback_uplift`` where the decision applies (null elsewhere)."""
    from features.decisions import DECISIONS

    columns = []
    for decision in DECISIONS:
        model = models.get(decision.name)
        if model is None:
            continue
        applies = chunk.select(decision.applies_expr().fill_null(False)).to_series().to_numpy()
        values = np.full(chunk.height, np.nan)
        if applies.any():
            x = encode(chunk.filter(pl.Series(applies)), model.encoding)
            values[applies] = np.asarray(model.booster.predict(x, num_threads=threads))
        name = f"{UPLIFT_COLUMNS[decision.name]}_uplift"
        columns.append(pl.Series(name, values).fill_nan(None))
    return columns


def _next_actions(
    chunk: pl.DataFrame,
    scored: pl.DataFrame,
    models: dict[str, LoadedModel],
    reason_p: np.ndarray | None,
    rules: RoutingRules,
) -> pl.Series:
    """The documented next-action rules applied to each ended contact (one call per contact: the
    rules are ordered Python conditions shared with the service, not re-written as expressions)."""
    fields = ["wait_seconds", "channel", "resolved", "transfers", "abandoned", "follow_up_sent"]
    present = [f for f in fields if f in chunk.columns]
    # The features carry flags as 0/1; the rules read them as the contact's true/false (as the
    # service does), so `follow_up_sent is False` holds for a 0 here too.
    flags = ("resolved", "abandoned", "follow_up_sent")
    facts = chunk.select(
        pl.col(f).cast(pl.Boolean) if f in flags and chunk.schema[f].is_integer() else pl.col(f)
        for f in present
    ).to_dicts()
    reasons = models.get(DROPOFF_REASON)
    probabilities = scored["p_order"].to_list()
    classes = list(reasons.card["class_names"]) if reasons is not None else []
    # Only an uplift model that beat random targeting on randomised rows gates the rules.
    uplift_keys = [
        key
        for task, key in UPLIFT_COLUMNS.items()
        if f"{key}_uplift" in scored.columns
        and (models[task].card.get("details") or {}).get("informative", False)
    ]
    uplift_rows = (
        scored.select([f"{k}_uplift" for k in uplift_keys]).rows()
        if uplift_keys
        else [()] * scored.height
    )
    actions = []
    for i, (contact, p) in enumerate(zip(facts, probabilities, strict=True)):
        per_reason = (
            dict(zip(classes, reason_p[i].tolist(), strict=True)) if reason_p is not None else None
        )
        uplift = dict(zip(uplift_keys, uplift_rows[i], strict=True))
        actions.append(rules.next_action(contact, p, per_reason, uplift, rules.costs).action)
    return pl.Series("next_action", actions, dtype=pl.String)


def built_ahead(items: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """``items`` made in a second thread, one ahead of their consumer.

    Building a chunk's features (Polars) and scoring the previous one (LightGBM, Parquet)
    both release the GIL, so the two keep both cores busy; one chunk ahead costs one chunk's
    memory. The maker's error is raised here; when the consumer stops, so does the maker.
    """
    done = object()

    def name_thread() -> None:
        threading.current_thread().name = "cto-features-ahead"

    with ThreadPoolExecutor(max_workers=1, initializer=name_thread) as maker:
        ahead = maker.submit(next, items, done)
        while (item := ahead.result()) is not done:
            ahead = maker.submit(next, items, done)
            yield item  # type: ignore[misc]


def _period_filter(since: date | None, until: date | None) -> pl.Expr:
    expr = pl.lit(True)
    if since is not None:
        expr = expr & (pl.col("started_at") >= datetime.combine(since, datetime.min.time(), UTC))
    if until is not None:
        end = datetime.combine(until, datetime.min.time(), UTC) + timedelta(days=1)
        expr = expr & (pl.col("started_at") < end)
    return expr


def _write_chunks(chunks: Iterator[pl.DataFrame], out: Path) -> int:
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    writer = None
    rows = 0
    try:
        for chunk in chunks:
            table = chunk.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), table.schema, compression="zstd")
            writer.write_table(table)
            rows += chunk.height
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise CTOError("nothing to write")
    tmp.replace(out)  # readers never see a half-written file
    return rows


def champions(
    settings: Settings, moment: str, say: Callable[[str], None]
) -> dict[str, LoadedModel]:
    """The champions of ``moment``'s tasks; the conversion model must exist, others may not."""
    models: dict[str, LoadedModel] = {}
    for task in MOMENT_TASKS[moment]:
        name = model_name(settings, task)
        try:
            models[task] = load_model(settings, name, settings.champion_alias)
        except CTOError:
            if task == MOMENT_TASKS[moment][0]:
                raise
            say(f"{name}: no champion, its columns are left out")
    return models


def score_contacts(
    data_dir: Path | str,
    settings: Settings,
    out: Path | str,
    *,
    moment: str = "arrival",
    since: date | None = None,
    until: date | None = None,
    explain: int = 0,
    allow_other_data: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    rules: RoutingRules | None = None,
) -> ScoreResult:
    """Score the contacts of ``[since, until]`` with the champions of ``moment`` into ``out``."""
    from features.pipeline import feature_chunks
    from features.spill import spilled
    from training.data import data_digest, data_profile, load_input, with_data_columns
    from training.distributed import active_client

    say = log or (lambda _m: None)
    client = active_client()
    if client is not None:
        from training.distributed_batch import score_contacts_dask

        return score_contacts_dask(
            client, data_dir, settings, out, moment, since, until, explain, allow_other_data,
            chunk_rows, progress, log, rules,
        )  # fmt: skip
    started = time.perf_counter()
    if moment not in MOMENT_TASKS:
        raise CTOError(f"--moment {moment!r}: choose arrival or after_contact")
    inputs = load_input(data_dir)
    profile = data_profile(inputs, data_digest(inputs.tables))
    models = champions(settings, moment, say)
    mismatches = check_models_fit_data(list(models.values()), profile, allow_other_data)
    contacts = inputs.tables["contacts"]
    selected = contacts.filter(_period_filter(since, until)).height
    if selected == 0:
        span = profile["span"]
        raise CTOError(
            f"no contacts between {since or 'the start'} and {until or 'the end'}: the data's "
            f"contacts run {span['from'][:10]} to {span['until'][:10]}"
        )
    say(f"{selected:,} contacts to score: the rates (global step), then features by customer chunk")
    data_columns = sorted(
        {c for m in models.values() for c in (m.card.get("feature_set") or {}).get("data_columns", [])}
    )  # fmt: skip
    threads = settings.num_threads
    bar = Progress(progress, selected)
    in_period = _period_filter(since, until)
    # The contacts' own columns a model reads (few, often none): kept beside the features. None
    # at all: not even the ids are kept (they would hold the whole id column of the input).
    own = contacts.select("contact_id", *[c for c in data_columns if c in contacts.columns])
    if not data_columns:
        own = own.clear()
    del contacts
    # The inputs are spilled to disk by customer-hash chunk and let go (features.spill); the
    # global step first (every contact's rates as of its start), then the per-customer features
    # one chunk at a time, scored and let go.
    with spilled(inputs.tables, Path(out).parent) as spill:
        rates = spill.carry_rates(settings.horizon_days)

        def chunks() -> Iterator[pl.DataFrame]:
            built_chunks = feature_chunks(
                spill,
                None,
                None,
                rates,
                "after_contact" if moment == "after_contact" else "arrival",
                journey_gap_days=settings.journey_gap_days,
                horizon_days=settings.horizon_days,
            )
            # The next chunk's features are built while this one is scored and written.
            for built in built_ahead(built_chunks):
                features = built.filter(in_period)
                for offset in range(0, features.height, chunk_rows):
                    part = with_data_columns(features.slice(offset, chunk_rows), own, data_columns)
                    scored = _score_chunk(part, models, moment, explain, threads, rules=rules)
                    if mismatches:
                        scored = scored.with_columns(pl.lit(True).alias("model_data_mismatch"))
                    bar.step(scored.height)
                    yield scored

        rows = _write_chunks(chunks(), Path(out))
    return ScoreResult(
        out=Path(out),
        rows=rows,
        models=[m.label for m in models.values()],
        seconds=time.perf_counter() - started,
        mismatches=mismatches,
    )


def table_profile(frame: pl.DataFrame, path: Path | str) -> dict[str, object]:
    """A one-row-per-contact table's source and schema (column kinds, not exact dtypes: a CSV's
    inferred integer/float types vary with the rows read)."""
    from training.data import schema_digest

    kinds = {name: _kind(dtype) for name, dtype in frame.schema.items()}
    schema = {"table": kinds}
    return {
        "source": str(Path(path).resolve()),
        "source_kind": "table",
        "schema": schema,
        "schema_digest": schema_digest(schema),
        "rows": {"table": frame.height},
    }


def _kind(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_temporal():
        return "time"
    return "text"


def table_mismatch(card: dict, frame: pl.DataFrame) -> str | None:
    """Feature columns missing from ``frame`` or of another kind than in training."""
    trained = ((card.get("data") or {}).get("schema") or {}).get("table") or {}
    missing = [n for n in card["feature_names"] if n not in frame.columns]
    if missing:
        return f"feature column(s) missing: {', '.join(missing)}"
    changed = [
        f"{n} ({_kind(frame.schema[n])}, trained {trained[n]})"
        for n in card["feature_names"]
        if n in trained and _kind(frame.schema[n]) != trained[n]
    ]
    if changed:
        return f"column kind differs: {', '.join(changed)}"
    return None


def score_table(
    path: Path | str,
    model_ref: str,
    settings: Settings,
    out: Path | str,
    *,
    allow_other_data: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = True,
) -> ScoreResult:
    """One output row per input row, in input order: the input columns plus ``p_order``."""
    from training.table import read_table

    started = time.perf_counter()
    name, alias, version = parse_model_ref(model_ref, settings.champion_alias)
    from training.uplift_table import score_uplift_table, uplift_version

    uplift = uplift_version(settings, name, alias, version)
    if (
        uplift is not None
    ):  # an uplift model (cto train --treatment): uplift and both arms' P(order)
        return score_uplift_table(Path(path), name, uplift, settings, Path(out))
    model = load_model(settings, name, alias, version)
    if model.card.get("objective") != "binary":
        raise CTOError(f"{model.label} is not a conversion (binary) model")
    frame = read_table(Path(path))
    problem = table_mismatch(model.card, frame)
    mismatches: list[str] = []
    if problem:
        if not allow_other_data or problem.startswith("feature column(s) missing"):
            raise CTOError(
                f"{path}: {model.label} cannot score this table: {problem}"
                + ("" if allow_other_data else " (--allow-other-data scores it anyway, marked)")
            )
        mismatches.append(problem)
        print(f"WARNING: {model.label}: {problem}", file=sys.stderr)
    features = frame.with_columns(
        pl.col(n).cast(pl.Int8)
        for n in model.card["feature_names"]
        if frame.schema[n] == pl.Boolean
    )
    bar = Progress(progress, frame.height)
    threads = settings.num_threads

    from training.distributed import active_client, score_table_dask

    client = active_client()
    # On Dask the workers score the table (map_partitions); the scores come back in input order.
    on_cluster = None
    if client is not None:
        if Path(path).suffix != ".parquet":
            raise CTOError(f"{path}: scoring on Dask reads Parquet (every worker reads its part)")
        on_cluster = score_table_dask(client, str(path), model, threads)

    def chunks() -> Iterator[pl.DataFrame]:
        for offset in range(0, frame.height, chunk_rows):
            part = frame.slice(offset, chunk_rows)
            if on_cluster is not None:
                p_order = on_cluster[offset : offset + chunk_rows]
            else:
                x = encode(features.slice(offset, chunk_rows), model.encoding)
                p_order = _binary_probability(model, x, threads)
            scored = part.with_columns(pl.Series("p_order", p_order))
            if mismatches:
                scored = scored.with_columns(pl.lit(True).alias("model_data_mismatch"))
            bar.step(scored.height)
            yield scored

    rows = _write_chunks(chunks(), Path(out))
    return ScoreResult(Path(out), rows, [model.label], time.perf_counter() - started, mismatches)
