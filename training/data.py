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
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.settings import Settings

TRAIN_SHARE = 0.70
VALID_SHARE = 0.15
TRUTH_FILE_STEMS = ("truth",)
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


def _read_table(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)


def load_input(data: Path | str | dict[str, pl.DataFrame]) -> InputData:
    """Validate contract tables (a directory or frames); pick up the simulator's truth if present.

    The truth table is read only to score the oracle and the planted drivers; it never becomes a
    feature (it is kept apart from ``tables``).
    """
    from features.validate import load_and_validate, validate_frames

    if isinstance(data, dict):
        raw = {k: v for k, v in data.items() if k != "truth"}
        result = validate_frames(raw, None)
        truth = data.get("truth")
        source = "frames"
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
        source = str(path)
    tables = result.tables
    for name in ("contacts", "orders"):
        if name not in tables or tables[name].height == 0:
            raise CTOError(f"{name}: no valid rows to train on")
    return InputData(tables=tables, truth=truth, source=source)


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
    """Cut the labelled span at whole days: ~70% train, ~15% valid, ~15% test (by time)."""
    start = started_at.min()
    end = data_end or started_at.max()
    labelled_until = end - timedelta(days=horizon_days)
    span_days = (labelled_until - start).total_seconds() / 86400
    if span_days < 6:
        raise CTOError(
            f"contacts.started_at spans {span_days:.1f} labelled days (after the {horizon_days}-day "
            "horizon): too short to split into train, validation and test by time"
        )
    day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
    valid_start = day0 + timedelta(days=math.floor(span_days * TRAIN_SHARE) + 1)
    test_start = day0 + timedelta(days=math.floor(span_days * (TRAIN_SHARE + VALID_SHARE)) + 1)
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


@dataclass
class Prepared:
    """Every contact with labels, features (both moments) and its split."""

    frame: pl.DataFrame
    rates: object  # features.rates.RateTables
    windows: Windows
    truth: pl.DataFrame | None
    digest: str
    source: str


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
    return Prepared(
        frame=frame,
        rates=rates,
        windows=windows,
        truth=inputs.truth,
        digest=data_digest(inputs.tables),
        source=inputs.source,
    )
