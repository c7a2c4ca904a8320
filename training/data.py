"""From contract tables to one labelled, featured row per contact, split by time.

Split (never random): the labelled span is cut into train (earliest ~70% of the time), valid
(next ~15%: early stopping and calibration) and test (latest ~15%: every reported metric).
A contact belongs to a split only if its label was known by that split's end
(``label_known_at <= cutoff``): a contact started three days before the validation window opens
has an order window that reaches into it, so it is not a training row. The same rule drops the
contacts of the last H days of the data, whose outcome nobody knows yet.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.settings import Settings

TRAIN_SHARE = 0.70
VALID_SHARE = 0.15
# Minimum data before any fit, per split: (labelled rows, positive rows). Below it a model's test
# metrics are noise, so training refuses. RECOMMENDED is what the closed products ask for
# (Salesforce Einstein lead scoring: 1,000 leads and 120 conversions); below it training goes on
# and says the estimates will be unstable. docs/training.md documents both.
MINIMUM_ROWS = {"train": (500, 50), "valid": (100, 10), "test": (100, 10)}
RECOMMENDED_TRAIN_ROWS = (1_000, 120)
TRUTH_FILE_STEMS = ("truth",)
# The decision log of randomised decisions (exploration), next to the contract tables when the
# contact centre logs one: contact_id plus a boolean column per decision.
EXPLORATION_FILE_STEM = "exploration"
EXPLORATION_COLUMNS = ("follow_up_randomised", "callback_randomised")
KEY_COLUMNS = ("contact_id", "customer_id", "started_at")


@dataclass(frozen=True)
class Windows:
    """Split boundaries: train [start, valid_start), valid [valid_start, test_start), test [test_start, end]."""

    start: datetime
    valid_start: datetime
    test_start: datetime
    end: datetime  # the data's end: labels known up to here

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {
            "train": {"from": self.start.isoformat(), "until": self.valid_start.isoformat()},
            "valid": {"from": self.valid_start.isoformat(), "until": self.test_start.isoformat()},
            "test": {"from": self.test_start.isoformat(), "until": self.end.isoformat()},
        }

    @classmethod
    def from_dict(cls, windows: dict[str, dict[str, str]]) -> Windows:
        return cls(
            datetime.fromisoformat(windows["train"]["from"]),
            datetime.fromisoformat(windows["valid"]["from"]),
            datetime.fromisoformat(windows["test"]["from"]),
            datetime.fromisoformat(windows["test"]["until"]),
        )


@dataclass
class InputData:
    tables: dict[str, pl.DataFrame]
    truth: pl.DataFrame | None
    source: str
    meta: dict = field(default_factory=dict)  # the importer's import.json, if any
    exploration: pl.DataFrame | None = None  # which decisions a fair coin took, if logged

    @property
    def source_kind(self) -> str:
        """Where the data came from: an importer's name, "simulator" or "tables"."""
        if self.meta.get("source_kind"):
            return str(self.meta["source_kind"])
        return "simulator" if self.truth is not None else "tables"

    @property
    def arrival_columns(self) -> tuple[str, ...]:
        """Extra contact columns the importer declared as known at arrival (model features)."""
        return tuple(self.meta.get("arrival_columns") or ())


def schema_of(tables: dict[str, pl.DataFrame]) -> dict[str, dict[str, str]]:
    return {name: {c: str(t) for c, t in frame.schema.items()} for name, frame in tables.items()}


def schema_digest(schema: dict[str, dict[str, str]]) -> str:
    """A fingerprint of the tables' column names and types (order-independent)."""
    text = json.dumps({t: sorted(cols.items()) for t, cols in sorted(schema.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def directory_inputs(path: Path, tables: dict[str, pl.DataFrame]) -> InputData:
    """Validated ``tables`` read from ``path`` as :class:`InputData` (the truth only flagged)."""
    from features.validate import import_meta

    has_truth = any(
        (path / f"{s}{x}").exists() for s in TRUTH_FILE_STEMS for x in (".parquet", ".csv")
    )
    return InputData(
        tables=tables,
        truth=pl.DataFrame() if has_truth else None,
        source=str(path.resolve()),
        meta=import_meta(path),
    )


def directory_profile(path: Path, tables: dict[str, pl.DataFrame]) -> dict[str, object]:
    """:func:`data_profile` of validated tables read from ``path`` (without reading the truth)."""
    return data_profile(directory_inputs(path, tables), data_digest(tables))


def data_profile(inputs: InputData, digest: str) -> dict[str, object]:
    """What a model learnt from: source, schema, time span and row counts (card and MLflow)."""
    contacts = inputs.tables["contacts"]
    schema = schema_of(inputs.tables)
    return {
        "source": inputs.source,
        "source_kind": inputs.source_kind,
        "schema": schema,
        "schema_digest": schema_digest(schema),
        "span": {
            "from": contacts["started_at"].min().isoformat(),
            "until": contacts["started_at"].max().isoformat(),
        },
        "rows": {name: frame.height for name, frame in inputs.tables.items()},
        "arrival_columns": list(inputs.arrival_columns),
        "data_digest": digest,
    }


def _read_table(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)


def check_exploration(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """The exploration log: contact_id and the randomised flags, booleans without nulls."""
    missing = [c for c in ("contact_id", *EXPLORATION_COLUMNS) if c not in frame.columns]
    if missing:
        raise CTOError(
            f"{source}: exploration log lacks column(s) {missing} (expected contact_id, "
            f"{', '.join(EXPLORATION_COLUMNS)})"
        )
    for column in EXPLORATION_COLUMNS:
        series = frame[column]
        if series.dtype != pl.Boolean or series.null_count():
            bad = series.dtype != pl.Boolean
            row = 1 if bad else int(series.is_null().arg_true()[0]) + 1
            raise CTOError(
                f"{source}: exploration log column {column!r}, row {row}: "
                + (f"must be boolean, is {series.dtype}" if bad else "null (must be true/false)")
            )
    return frame.select(pl.col("contact_id").cast(pl.String), *EXPLORATION_COLUMNS)


def load_input(data: Path | str | dict[str, pl.DataFrame]) -> InputData:
    """Validate contract tables (a directory or frames); pick up the simulator's truth if present.

    The truth table is read only to score the oracle and the planted drivers; it never becomes a
    feature (it is kept apart from ``tables``).
    """
    from features.validate import import_meta, load_and_validate, validate_frames

    if isinstance(data, dict):
        raw = {k: v for k, v in data.items() if k not in ("truth", EXPLORATION_FILE_STEM)}
        result = validate_frames(raw, None)
        truth = data.get("truth")
        exploration = data.get(EXPLORATION_FILE_STEM)
        source = "frames"
        meta: dict = {}
    else:
        path = Path(data)
        if not path.is_dir():
            raise CTOError(f"data directory {path} does not exist")
        result = load_and_validate(path)
        truth = None
        for stem in TRUTH_FILE_STEMS:
            for suffix in (".parquet", ".csv"):
                candidate = path / f"{stem}{suffix}"
                if candidate.exists():
                    truth = _read_table(candidate)
                    break
        exploration = None
        candidate = path / f"{EXPLORATION_FILE_STEM}.parquet"
        if candidate.exists():
            exploration = pl.read_parquet(candidate)
        source = str(path.resolve())
        meta = import_meta(path)
    tables = result.tables
    for name in ("contacts", "orders"):
        if name not in tables or tables[name].height == 0:
            raise CTOError(f"{name}: no valid rows to train on")
    if exploration is not None:
        exploration = check_exploration(exploration, source)
    inputs = InputData(
        tables=tables, truth=truth, source=source, meta=meta, exploration=exploration
    )
    missing = [c for c in inputs.arrival_columns if c not in tables["contacts"].columns]
    if missing:
        raise CTOError(
            f"{source}: import.json declares arrival column(s) {missing} that contacts lack"
        )
    return inputs


def data_digest(tables: dict[str, pl.DataFrame]) -> str:
    """A fingerprint of the training tables (row hashes, order-independent) for the run record."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        frame = tables[name]
        row_hashes = frame.hash_rows(seed=0).sort()
        digest.update(name.encode())
        digest.update(row_hashes.to_numpy().tobytes())
        digest.update(",".join(frame.columns).encode())
    return digest.hexdigest()[:16]


def time_windows(
    started_at: pl.Series, horizon_days: int, data_end: datetime | None = None
) -> Windows:
    """Cut the labelled span by time into train, valid and test, sized by what each can use.

    The labelled span runs from the first contact to the last contact whose outcome is known:
    the data's end minus the horizon, or the last contact when orders were recorded for longer
    than contacts (an import whose deals run months past its last lead). A contact counts in
    train or valid only if its outcome was known by that split's end (:func:`split_expr`), so
    the last H days before each cut give no rows; the usable days (the span minus two horizons)
    are shared ~70% train, ~15% valid, ~15% test, and each cut lies H days after its usable part.
    """
    start = started_at.min()
    last_contact = started_at.max()
    end = data_end or last_contact
    labelled_until = min(end - timedelta(days=horizon_days), last_contact)
    span_days = (labelled_until - start).total_seconds() / 86400
    usable_days = span_days - 2 * horizon_days
    if usable_days < 6:
        raise CTOError(
            f"contacts.started_at spans {start:%Y-%m-%d} to {last_contact:%Y-%m-%d}, data until "
            f"{end:%Y-%m-%d}: {span_days:.1f} days of contacts with a known outcome, "
            f"{usable_days:.1f} after leaving the {horizon_days}-day horizon before each of the "
            "two cuts: too short to split into train, validation and test by time (need 6 "
            "days; use a shorter --horizon-days or more data)"
        )
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    valid_start = day0 + timedelta(days=math.floor(usable_days * TRAIN_SHARE + horizon_days) + 1)
    test_start = day0 + timedelta(
        days=math.floor(usable_days * (TRAIN_SHARE + VALID_SHARE) + 2 * horizon_days) + 1
    )
    return Windows(start=start, valid_start=valid_start, test_start=test_start, end=end)


def split_expr(
    windows: Windows, known_at: str = "label_known_at", time: str = "started_at"
) -> pl.Expr:
    """``train``/``valid``/``test`` per row, or null when the label is not known by the split's end."""
    t = pl.col(time)
    k = pl.col(known_at)
    return (
        pl.when((t < windows.valid_start) & (k <= windows.valid_start))
        .then(pl.lit("train"))
        .when((t >= windows.valid_start) & (t < windows.test_start) & (k <= windows.test_start))
        .then(pl.lit("valid"))
        .when((t >= windows.test_start) & (k <= windows.end))
        .then(pl.lit("test"))
        .otherwise(pl.lit(None, dtype=pl.String))
        .alias("split")
    )


@dataclass(frozen=True)
class DataCheck:
    """Labelled rows and positives per split against the minimum; ``line`` says it in one line."""

    counts: dict[str, tuple[int, int]]
    short: list[str]
    below_recommended: bool
    what: str

    @property
    def ok(self) -> bool:
        return not self.short

    @property
    def line(self) -> str:
        parts = ", ".join(
            f"{split} {rows:,} labelled / {pos:,} {self.what}"
            for split, (rows, pos) in self.counts.items()
        )
        need = ", ".join(f"{s} {r:,}/{p:,}" for s, (r, p) in MINIMUM_ROWS.items())
        text = f"data check: {parts} (minimum {need})"
        if self.short:
            return f"{text}: too few in {', '.join(self.short)}"
        if self.below_recommended:
            rows, pos = RECOMMENDED_TRAIN_ROWS
            return (
                f"{text}: ok, but under the {rows:,} labelled / {pos:,} {self.what} recommended for "
                "training: expect unstable estimates"
            )
        return f"{text}: ok"


def check_data(
    frame: pl.DataFrame, label: str, what: str = "positive", split: str = "split"
) -> DataCheck:
    """Count labelled rows and positives (``label`` true) per split and compare with the minimum."""
    grouped = (
        frame.lazy()
        .filter(pl.col(split).is_not_null() & pl.col(label).is_not_null())
        .group_by(split)
        .agg(pl.len().alias("rows"), pl.col(label).cast(pl.Int64).sum().alias("positive"))
        .collect()
    )
    found = {r[split]: (int(r["rows"]), int(r["positive"])) for r in grouped.to_dicts()}
    counts = {s: found.get(s, (0, 0)) for s in MINIMUM_ROWS}
    short = [
        s
        for s, (rows, pos) in counts.items()
        if rows < MINIMUM_ROWS[s][0] or pos < MINIMUM_ROWS[s][1]
    ]
    train_rows, train_pos = counts["train"]
    below = train_rows < RECOMMENDED_TRAIN_ROWS[0] or train_pos < RECOMMENDED_TRAIN_ROWS[1]
    return DataCheck(counts=counts, short=short, below_recommended=below, what=what)


def require_data(check: DataCheck, span: str = "") -> None:
    """Refuse to fit on too little data, with the counts and what would help."""
    if not check.ok:
        raise CTOError(
            f"{check.line}{span}; a time split needs enough labelled rows and positives in every "
            "split: add data, or lengthen the labelled span (a shorter --horizon-days leaves more "
            "contacts with a known outcome)"
        )


@dataclass
class Prepared:
    """Every contact with labels, features (both moments) and its split."""

    frame: pl.DataFrame
    rates: object  # features.rates.RateTables
    windows: Windows
    truth: pl.DataFrame | None
    digest: str
    source: str
    profile: dict = field(default_factory=dict)
    data_columns: tuple[str, ...] = ()  # extra contact columns used as features
    exploration: pl.DataFrame | None = None  # randomised decisions (uplift models), if logged


def with_data_columns(
    features: pl.DataFrame, contacts: pl.DataFrame, columns: tuple[str, ...] | list[str]
) -> pl.DataFrame:
    """The features plus the contacts' own extra columns known at arrival (by contact_id)."""
    columns = [c for c in columns if c not in features.columns]
    if not columns:
        return features
    missing = [c for c in columns if c not in contacts.columns]
    if missing:
        raise CTOError(f"contacts: column(s) {missing} missing; the model uses them as features")
    extra = contacts.select("contact_id", *columns)
    return features.join(extra, on="contact_id", how="left")


def prepare(data: Path | str | dict[str, pl.DataFrame], settings: Settings, log=None) -> Prepared:
    """Validate, label, compute rates and features, join, and assign the time split."""
    from features.labels import label_contacts
    from features.pipeline import build_features
    from features.rates import compute_rates

    say = log or (lambda _msg: None)
    inputs = load_input(data)
    contacts = inputs.tables["contacts"]
    orders = inputs.tables["orders"]
    customers = inputs.tables.get("customers")
    say(f"validated {contacts.height:,} contacts, {orders.height:,} orders")

    labeled = label_contacts(contacts, orders, settings.horizon_days, settings.journey_gap_days)
    say("labelled contacts and journeys")
    rates = compute_rates(labeled, settings.horizon_days)
    say("computed point-in-time rate tables")
    features = build_features(contacts, orders, customers, rates, moment="after_contact")
    features = with_data_columns(features, contacts, inputs.arrival_columns)
    say(f"built {features.width - len(KEY_COLUMNS)} features")

    data_end = max(contacts["started_at"].max(), orders["ordered_at"].max())
    windows = time_windows(contacts["started_at"], settings.horizon_days, data_end)
    label_columns = [c for c in labeled.columns if c not in features.columns or c == "contact_id"]
    frame = (
        features.lazy()
        .join(labeled.lazy().select(label_columns), on="contact_id", how="left")
        .with_columns(split_expr(windows))
        .sort("started_at", "contact_id")
        .collect()
    )
    digest = data_digest(inputs.tables)
    return Prepared(
        frame=frame,
        rates=rates,
        windows=windows,
        truth=inputs.truth,
        digest=digest,
        source=inputs.source,
        profile=data_profile(inputs, digest),
        data_columns=inputs.arrival_columns,
        exploration=inputs.exploration,
    )
