"""Load the input tables and hold them to the data contract declared in :mod:`features.schema`.

Everything here is derived from the ``Column`` declarations: the parsers that turn raw text or
loosely typed frames into contract dtypes, the row-level reject rules (Polars expressions), the
pandera.polars schema that checks the accepted frames at the boundary, and the generated part of
docs/data-contract.md.

A file that cannot be used at all (missing, unreadable, empty, a missing required column, a column
of the wrong type) raises :class:`features.errors.CTOError` with one line naming the file, column
and rule. A row that breaks a rule is rejected, never dropped silently: it is kept in
``ValidationResult.rejects`` with its 1-based data row number, the column, the rule and a message.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.schema import TABLES, UTC_TIME, Column, Table

# Rule names as they appear in `_rule`, in the CLI and in docs/data-contract.md.
RULES: dict[str, str] = {
    "type": "The value parses as the column's type: an ISO-8601 timestamp, a number, a whole "
    "number, a boolean (true/false/1/0/yes/no). One bad value rejects its row; a column where "
    "no value parses is the wrong type and fails the file.",
    "not_null": "A column that is not nullable has a value in every row (empty text counts as "
    "missing).",
    "range": "A number lies within the column's minimum and maximum and is finite (no NaN, no "
    "infinity).",
    "enum": "A category is one of the column's values. Columns that have an `other` category "
    "take an unknown value as `other` and count it (`coerced_to_other`); in the others ("
    + ", ".join(
        f"`{t.name}.{c.name}`"
        for t in TABLES.values()
        for c in t.columns
        if c.categories is not None and "other" not in c.categories
    )
    + ") an unknown value rejects the row.",
    "unique": "An id appears once per table. The first row with an id is kept; later rows with "
    "the same id are rejected and their message names the first row.",
    "reference": "An id that points into another table exists among that table's accepted rows: "
    "an order's `contact_id` in contacts, an order's or a contact's `customer_id` in customers "
    "(only when a customers table is given), and an order's attributed contact belongs to the "
    "same customer as the order.",
    "time_order": "Events happen in order: an order is not placed before its attributed contact "
    "started, and a customer's `first_seen_at` is not after that customer's first contact or "
    "first order.",
}

# Cross-table rules, as data for the docs; `_cross_table_checks` implements them in this order.
CROSS_TABLE_RULES: tuple[tuple[str, str, str, str], ...] = (
    (
        "customers",
        "first_seen_at",
        "time_order",
        "not after the customer's first contact `started_at` or first order `ordered_at`",
    ),
    (
        "contacts",
        "customer_id",
        "reference",
        "exists in customers (when a customers table is given)",
    ),
    (
        "orders",
        "customer_id",
        "reference",
        "exists in customers (when a customers table is given)",
    ),
    ("orders", "contact_id", "reference", "when set, exists in contacts"),
    (
        "orders",
        "contact_id",
        "reference",
        "when set, the contact belongs to the order's customer",
    ),
    ("orders", "ordered_at", "time_order", "not before its attributed contact's `started_at`"),
)

REJECT_COLUMNS = ("_row", "_column", "_rule", "_message")
BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
INPUT_SUFFIXES = (".parquet", ".csv")
INT32_MAX = 2**31 - 1

_BAD = "__cto_bad__"  # raw text of a value that failed to parse (null where it parsed)
_UNKNOWN = "__cto_unknown__"  # raw text of a category value not in the enum

_COERCED_SCHEMA = {"table": pl.String, "column": pl.String, "value": pl.String, "rows": pl.UInt32}
_REJECT_SCHEMA = {"_row": pl.Int64, "_column": pl.String, "_rule": pl.String, "_message": pl.String}


# --------------------------------------------------------------------------------------------
# Column kinds: how a contract dtype is named, parsed and shown
# --------------------------------------------------------------------------------------------


def _kind(column: Column) -> str:
    dtype = column.dtype
    if isinstance(dtype, pl.Enum):
        return "category"
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "number"
    if dtype == pl.String:
        return "text"
    raise TypeError(f"features.schema column {column.name} has an unsupported dtype {dtype}")


_KIND_PHRASE = {
    "timestamp": "an ISO-8601 timestamp",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "a boolean (true/false/1/0/yes/no)",
    "text": "text",
    "category": "a category",
}

_KIND_DOC = {
    "timestamp": "timestamp (UTC, µs)",
    "number": "number (float64)",
    "integer": "whole number (int32)",
    "boolean": "boolean",
    "text": "text",
    "category": "category",
}


def _is_texty(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum)


def _clean_text(expr: pl.Expr) -> pl.Expr:
    """Trimmed text; empty text is missing (CSV writers disagree on how to spell null)."""
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_bytes() > 0).then(text)


# ISO-8601 forms accepted (after a space between date and time became a T). "Z" forms are UTC,
# "offset" forms are converted to UTC, "naive" forms are taken as UTC.
TIMESTAMP_FORMATS: tuple[tuple[str, str], ...] = (
    ("%Y-%m-%dT%H:%M:%S%.fZ", "Z"),
    ("%Y-%m-%dT%H:%M:%S%.f", "naive"),
    ("%Y-%m-%dT%H:%M:%S%.f%z", "offset"),
    ("%Y-%m-%dT%H:%MZ", "Z"),
    ("%Y-%m-%dT%H:%M", "naive"),
    ("%Y-%m-%dT%H:%M%z", "offset"),
    ("%Y-%m-%d", "naive"),
)
TIMESTAMP_SAMPLE = 1000


def _timestamp_text(text: pl.Expr) -> pl.Expr:
    return text.str.replace(" ", "T", literal=True)


def _parse_timestamp(text: pl.Expr, form: int) -> pl.Expr:
    """ISO-8601 text in one of TIMESTAMP_FORMATS -> Datetime(us, UTC); null where it does not fit."""
    fmt, zone = TIMESTAMP_FORMATS[form]
    normal = _timestamp_text(text)
    if fmt == "%Y-%m-%d":
        return normal.str.to_date(fmt, strict=False).cast(pl.Datetime("us", "UTC"))
    value = normal.str.to_datetime(fmt, strict=False, time_unit="us")
    zoned = (
        value.dt.convert_time_zone("UTC") if zone == "offset" else value.dt.replace_time_zone("UTC")
    )
    return zoned.cast(UTC_TIME)


def _likely_timestamp_form(raw: pl.DataFrame, name: str) -> int:
    """The format that fits most of the first values: parsing with an offset costs four times a
    fixed "Z", so the whole column goes through the format it most likely uses."""
    sample = raw.lazy().select(_clean_text(pl.col(name))).drop_nulls().head(TIMESTAMP_SAMPLE)
    fits = sample.select(
        *[
            _parse_timestamp(pl.col(name), form).count().alias(str(form))
            for form in range(len(TIMESTAMP_FORMATS))
        ]
    ).collect()
    counts = fits.row(0)
    return max(range(len(counts)), key=lambda form: (counts[form], -form))


def _retry_timestamps(parsed: pl.DataFrame, name: str, first_form: int) -> pl.DataFrame:
    """Parse the values the first format missed with the other formats, one format at a time.

    Only the rows still unparsed go through each further format, so a clean column costs one
    parse instead of one per accepted format.
    """
    bad = _BAD + name
    for form in range(len(TIMESTAMP_FORMATS)):
        if form == first_form:
            continue
        remaining = parsed.filter(pl.col(bad).is_not_null()).select("_row", bad)
        if remaining.height == 0:
            break
        fixed = (
            remaining.select("_row", _parse_timestamp(pl.col(bad), form).alias(name))
            .filter(pl.col(name).is_not_null())
            .with_columns(pl.lit(None, dtype=pl.String).alias(bad))
        )
        if fixed.height:
            parsed = parsed.update(fixed, on="_row", how="left", include_nulls=True)
    return parsed


def _whole_number(number: pl.Expr) -> pl.Expr:
    fits = number.is_finite() & (number == number.floor()) & (number.abs() <= INT32_MAX)
    return pl.when(fits).then(number).cast(pl.Int32)


@dataclass(frozen=True)
class _Parsed:
    value: pl.Expr  # contract dtype; null where missing or unparseable
    # The raw value as text, shown in the `type` message where `value` is null although the raw
    # value is not (None: the parse cannot fail). Kept apart from `value`: Polars does not share
    # the parse between two expressions, and timestamps are worth parsing once.
    shown: pl.Expr | None
    unknown: pl.Expr | None  # raw text of an unknown category (enum rule / coerced to other)


def _parser(
    column: Column,
    raw_dtype: pl.DataType,
    source: str,
    timestamp_form: int = 0,
    clean_text: bool = False,
) -> _Parsed:
    """Expressions that parse one raw column into its contract dtype (or a file-level error).

    ``clean_text``: the (String) column is known to hold no empty text and no surrounding
    spaces, so cleaning would not change it. A column already in its contract dtype that cannot
    fail (clean text, the contract's Enum, UTC timestamps) is passed through as it is: the
    parsed frame then shares the input's memory instead of copying it.
    """
    raw = pl.col(column.name)
    kind = _kind(column)
    texty = _is_texty(raw_dtype)
    if raw_dtype == column.dtype and (
        (kind == "text" and clean_text) or kind in ("category", "timestamp", "integer")
    ):
        return _Parsed(raw, None, None)
    text = _clean_text(raw) if texty else None

    def wrong_type() -> CTOError:
        return CTOError(
            f"{source}: column {column.name} has type {raw_dtype}, expected "
            f"{_KIND_PHRASE[kind]} ({_KIND_DOC[kind]}); rule type"
        )

    if kind == "text":
        if texty:
            return _Parsed(text, None, None)
        if raw_dtype.is_integer():
            return _Parsed(raw.cast(pl.String), None, None)
        raise wrong_type()

    if kind == "category":
        if not texty:
            raise wrong_type()
        categories = column.categories or ()
        lower = text.str.to_lowercase()
        known = lower.is_in(list(categories))
        value = pl.when(known).then(lower)
        if "other" in categories:
            value = value.when(text.is_not_null()).then(pl.lit("other"))
        unknown = pl.when(text.is_not_null() & ~known).then(text)
        return _Parsed(value.cast(column.dtype), None, unknown)

    if kind == "timestamp":
        if texty:
            # One format here; _retry_timestamps tries the others on what is left.
            value = _parse_timestamp(text, timestamp_form)
            return _Parsed(value, text, None)
        if isinstance(raw_dtype, pl.Datetime):
            zoned = (
                raw.dt.replace_time_zone("UTC")
                if raw_dtype.time_zone is None
                else raw.dt.convert_time_zone("UTC")
            )
            return _Parsed(zoned.cast(UTC_TIME), None, None)
        if raw_dtype == pl.Date:
            return _Parsed(raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), None, None)
        raise wrong_type()

    if kind == "number":
        if texty:
            value = text.cast(pl.Float64, strict=False)
            return _Parsed(value, text, None)
        if raw_dtype.is_numeric():
            return _Parsed(raw.cast(pl.Float64), None, None)
        raise wrong_type()

    if kind == "integer":
        if texty:
            value = _whole_number(text.cast(pl.Float64, strict=False))
            return _Parsed(value, text, None)
        if raw_dtype.is_integer():
            value = raw.cast(pl.Int32, strict=False)
        elif raw_dtype.is_float() or raw_dtype.is_decimal():
            value = _whole_number(raw.cast(pl.Float64))
        else:
            raise wrong_type()
        return _Parsed(value, raw.cast(pl.String), None)

    # boolean
    if texty:
        value = text.str.to_lowercase().replace_strict(
            BOOLEAN_TEXT, default=None, return_dtype=pl.Boolean
        )
        return _Parsed(value, text, None)
    if raw_dtype == pl.Boolean:
        return _Parsed(raw, None, None)
    if raw_dtype.is_integer():
        value = raw.replace_strict({0: False, 1: True}, default=None, return_dtype=pl.Boolean)
        return _Parsed(value, raw.cast(pl.String), None)
    raise wrong_type()


# --------------------------------------------------------------------------------------------
# Row-level rules, generated from the Column declarations
# --------------------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _quoted(expr: pl.Expr) -> pl.Expr:
    return pl.format("'{}'", expr)


def _iso(expr: pl.Expr) -> pl.Expr:
    """A UTC timestamp written as it is read: 2026-03-02T09:15:00Z."""
    return expr.dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")


@dataclass(frozen=True)
class RowRule:
    """One row-level rule on one column: `failed` is true on the rows that break it."""

    column: str
    rule: str
    failed: pl.Expr
    message: pl.Expr


def row_rules(table: Table) -> list[RowRule]:
    """The row-level reject rules of a table, as Polars expressions over the parsed frame.

    The parsed frame holds each contract column in its contract dtype plus, per column, the raw
    text of values that failed to parse (``type``) or were unknown categories (``enum``).
    """
    rules: list[RowRule] = []
    for column in table.columns:
        value = pl.col(column.name)
        kind = _kind(column)
        bad = pl.col(_BAD + column.name)
        unknown = pl.col(_UNKNOWN + column.name)
        missing = value.is_null()
        if kind == "category":
            missing = missing & unknown.is_null()
            if "other" not in (column.categories or ()):
                allowed = ", ".join(column.categories or ())
                rules.append(
                    RowRule(
                        column.name,
                        "enum",
                        value.is_null() & unknown.is_not_null(),
                        pl.format("{} is not one of: {}", _quoted(unknown), pl.lit(allowed)),
                    )
                )
        elif kind != "text":
            missing = missing & bad.is_null()
            rules.append(
                RowRule(
                    column.name,
                    "type",
                    bad.is_not_null(),
                    pl.format("{} is not {}", _quoted(bad), pl.lit(_KIND_PHRASE[kind])),
                )
            )
        if not column.nullable:
            rules.append(
                RowRule(column.name, "not_null", missing, pl.lit("missing value (not nullable)"))
            )
        if column.minimum is not None or column.maximum is not None:
            rules.append(_range_rule(column))
    return rules


def _range_rule(column: Column) -> RowRule:
    value = pl.col(column.name)
    out_of_range = pl.lit(False)
    message = pl.lit(None, dtype=pl.String)
    # Checked in reverse so the first matching reason ends up outermost in the when-chain.
    reasons: list[tuple[pl.Expr, pl.Expr]] = []
    if column.dtype.is_float():
        reasons.append((value.is_nan(), pl.lit("NaN is not a finite number")))
    if column.minimum is not None:
        below = value < column.minimum
        reasons.append(
            (
                below,
                pl.format(
                    "{} is below the minimum {}", value, pl.lit(_number_text(column.minimum))
                ),
            )
        )
    if column.maximum is not None:
        above = value > column.maximum
        reasons.append(
            (
                above,
                pl.format(
                    "{} is above the maximum {}", value, pl.lit(_number_text(column.maximum))
                ),
            )
        )
    for condition, text in reversed(reasons):
        out_of_range = out_of_range | condition
        message = pl.when(condition).then(text).otherwise(message)
    return RowRule(column.name, "range", value.is_not_null() & out_of_range, message)


# --------------------------------------------------------------------------------------------
# The pandera.polars boundary schema, derived from the same declarations
# --------------------------------------------------------------------------------------------


def contract_schema(table: Table | str):
    """pandera.polars schema of an accepted frame (contract dtypes; extra columns allowed)."""
    import pandera.polars as pa

    table = TABLES[table] if isinstance(table, str) else table
    columns = {}
    for column in table.columns:
        checks = []
        if column.minimum is not None:
            checks.append(pa.Check.ge(column.minimum))
        if column.maximum is not None:
            checks.append(pa.Check.le(column.maximum))
        if column.categories is not None:
            checks.append(pa.Check.isin(list(column.categories)))
        columns[column.name] = pa.Column(
            column.dtype,
            nullable=column.nullable,
            unique=column.unique,
            checks=checks or None,
            description=column.description,
        )
    return pa.DataFrameSchema(columns, name=table.name, strict=False, ordered=False)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested columns (lists, structs) as JSON text: CSV has no place for them."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    if not nested:
        return frame
    return frame.with_columns(
        pl.struct(pl.col(name)).struct.json_encode().alias(name) for name in nested
    )


@dataclass
class ValidationResult:
    """Accepted rows per table, rejected rows with their reasons, and the counts."""

    tables: dict[str, pl.DataFrame]
    rejects: dict[str, pl.DataFrame]
    summary: pl.DataFrame
    coerced: pl.DataFrame  # table, column, value (raw text), rows: unknown categories -> other
    sources: dict[str, str]

    @property
    def ok(self) -> bool:
        """True when no row was rejected."""
        return all(frame.height == 0 for frame in self.rejects.values())

    def rule_counts(self) -> pl.DataFrame:
        """Rejected rows per table, column and rule (a row breaking two rules counts in both)."""
        frames = [
            frame.group_by("_column", "_rule")
            .agg(rows=pl.col("_row").n_unique(), first_row=pl.col("_row").min())
            .select(pl.lit(name).alias("table"), "_column", "_rule", "rows", "first_row")
            for name, frame in self.rejects.items()
        ]
        empty = pl.DataFrame(
            schema={
                "table": pl.String,
                "_column": pl.String,
                "_rule": pl.String,
                "rows": pl.UInt32,
                "first_row": pl.Int64,
            }
        )
        return (
            pl.concat([empty, *frames], how="vertical_relaxed")
            .rename({"_column": "column", "_rule": "rule"})
            .sort("table", "first_row", "column", "rule")
        )

    def reject_records(self, table: str | None = None) -> list[dict]:
        """Per rejected row and reason, plain dicts for an API response.

        Keys: ``table``, ``source``, ``row`` (1-based data row), ``index`` (0-based position in
        the input frame), ``column``, ``rule``, ``message``.
        """
        records: list[dict] = []
        for name, frame in self.rejects.items():
            if table is not None and name != table:
                continue
            records.extend(
                frame.select(
                    pl.lit(name).alias("table"),
                    pl.lit(self.sources.get(name, name)).alias("source"),
                    pl.col("_row").alias("row"),
                    (pl.col("_row") - 1).alias("index"),
                    pl.col("_column").alias("column"),
                    pl.col("_rule").alias("rule"),
                    pl.col("_message").alias("message"),
                ).to_dicts()
            )
        return records

    def error_lines(self, limit_per_rule: int | None = None) -> list[str]:
        """One line per rejected row and reason naming the file, row, column and rule."""
        lines: list[str] = []
        for name, frame in self.rejects.items():
            shown = frame.sort("_row")
            if limit_per_rule is not None:
                shown = shown.group_by("_column", "_rule", maintain_order=True).head(limit_per_rule)
            source = self.sources.get(name, name)
            lines.extend(
                f"{source} row {row}, column {column}, rule {rule}: {message}"
                for row, column, rule, message in shown.select(REJECT_COLUMNS).iter_rows()
            )
        return lines

    def raise_if_rejected(self) -> None:
        """Raise CTOError naming the first rejected row: for producers that must be clean."""
        for name, frame in self.rejects.items():
            if frame.height:
                first = self.error_lines(limit_per_rule=1)[0]
                rows = frame["_row"].n_unique()
                raise CTOError(f"{rows} rejected row(s) in {self.sources.get(name, name)}; {first}")

    def write_rejects(self, directory: Path | str) -> list[Path]:
        """Write ``<table>_rejects.parquet`` and ``<table>_rejects.csv`` for every table.

        Tables without rejects get empty files too, so an old run's rejects never linger.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, frame in self.rejects.items():
            parquet = directory / f"{name}_rejects.parquet"
            csv = directory / f"{name}_rejects.csv"
            frame.write_parquet(parquet)
            _csv_ready(frame).write_csv(csv)
            written += [parquet, csv]
        return written

    def write_tables(self, directory: Path | str) -> list[Path]:
        """Write the accepted tables as ``<table>.parquet``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, frame in self.tables.items():
            path = directory / f"{name}.parquet"
            frame.write_parquet(path)
            written.append(path)
        return written


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass
class _TableState:
    table: Table
    source: str
    raw: pl.DataFrame  # as given, plus `_row`
    parsed: pl.DataFrame  # `_row`, contract columns in contract dtypes, helper columns
    violations: list[pl.DataFrame]

    _accepted: tuple[int, pl.DataFrame] | None = None  # (violation frames seen, accepted rows)

    def rejected_rows(self) -> pl.DataFrame:
        frames = [v.select("_row") for v in self.violations if v.height]
        return pl.concat(frames).unique() if frames else pl.DataFrame(schema={"_row": pl.Int64})

    def accepted(self) -> pl.DataFrame:
        """The parsed rows no rule has rejected so far (cached until a rule adds violations)."""
        if self._accepted is None or self._accepted[0] != len(self.violations):
            rejected = self.rejected_rows()
            accepted = (
                self.parsed.join(rejected, on="_row", how="anti")
                if rejected.height
                else self.parsed
            )
            self._accepted = (len(self.violations), accepted)
        return self._accepted[1]


def _violations(frame: pl.LazyFrame, column: str, rule: str, failed: pl.Expr, message: pl.Expr):
    return frame.filter(failed).select(
        pl.col("_row"),
        pl.lit(column).alias("_column"),
        pl.lit(rule).alias("_rule"),
        message.cast(pl.String).alias("_message"),
    )


def _check_columns(table: Table, raw: pl.DataFrame, source: str) -> pl.DataFrame:
    """File-level checks on the columns; adds absent nullable columns as nulls."""
    reserved = [name for name in REJECT_COLUMNS if name in raw.columns]
    reserved += [name for name in raw.columns if name.startswith(("__cto_",))]
    if reserved:
        raise CTOError(
            f"{source}: column {reserved[0]} uses a reserved name (the rejects use "
            f"{', '.join(REJECT_COLUMNS)}); rename it; rule reserved_column"
        )
    missing = [c.name for c in table.columns if not c.nullable and c.name not in raw.columns]
    if missing:
        lowered = {name.strip().lower(): name for name in raw.columns}
        hints = [f"{lowered[name]!r} for {name!r}" for name in missing if name.lower() in lowered]
        hint = f" (found {', '.join(hints)}: names are case-sensitive)" if hints else ""
        raise CTOError(
            f"{source}: missing required column(s) {', '.join(missing)}{hint}; rule required_column"
        )
    absent = [c for c in table.columns if c.name not in raw.columns]
    return raw.with_columns(pl.lit(None, dtype=c.dtype).alias(c.name) for c in absent)


def _via_distinct_values(parsed: _Parsed, column: Column, raw: pl.DataFrame) -> _Parsed:
    """The same parse, run once per distinct value and mapped back onto the rows.

    Categories, booleans and counts take a handful of distinct values; parsing those few and
    looking the rows up is several times cheaper than parsing a million strings.
    """
    name = column.name
    value_dtype = pl.Boolean if _kind(column) == "boolean" else column.dtype
    none = pl.lit(None, dtype=pl.String)
    lookup = (
        raw.lazy()
        .select(pl.col(name).unique())
        .drop_nulls()
        .select(
            pl.col(name).cast(pl.String).alias("key"),
            parsed.value.alias("value"),
            (
                pl.when(parsed.value.is_null()).then(parsed.shown)
                if parsed.shown is not None
                else none
            ).alias("bad"),
            (parsed.unknown if parsed.unknown is not None else none).alias("unknown"),
        )
        .collect()
    )
    key = pl.col(name).cast(pl.String)

    def mapped(field: str, dtype: pl.DataType) -> pl.Expr:
        return key.replace_strict(lookup["key"], lookup[field], default=None, return_dtype=dtype)

    return _Parsed(
        mapped("value", value_dtype),
        mapped("bad", pl.String) if parsed.shown is not None else None,
        mapped("unknown", pl.String) if parsed.unknown is not None else None,
    )


def _clean_text_columns(table: Table, raw: pl.DataFrame) -> set[str]:
    """Text columns (String in the input, text in the contract) that cleaning would not change:
    no empty text and no surrounding whitespace. Checked in one pass without copying them."""
    names = [
        c.name for c in table.columns if _kind(c) == "text" and raw.schema[c.name] == pl.String
    ]
    if not names:
        return set()
    dirty = raw.select(
        ((pl.col(name).str.len_bytes() == 0) | pl.col(name).str.contains(r"^\s|\s$"))
        .any()
        .alias(name)
        for name in names
    ).row(0, named=True)
    return {name for name in names if not dirty[name]}


def _parse_table(
    table: Table, raw: pl.DataFrame, source: str, whole_column_errors: bool = True
) -> _TableState:
    raw = raw.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64))
    exprs: list[pl.Expr] = [pl.col("_row")]
    may_fail: list[str] = []  # columns whose parse can fail (a raw text to keep where it did)
    forms: dict[str, int] = {}  # timestamp columns given as text: the format tried first
    clean = _clean_text_columns(table, raw)
    for column in table.columns:
        raw_dtype = raw.schema[column.name]
        kind, texty = _kind(column), _is_texty(raw_dtype)
        if kind == "timestamp" and texty:
            forms[column.name] = _likely_timestamp_form(raw, column.name)
        parsed = _parser(column, raw_dtype, source, forms.get(column.name, 0), column.name in clean)
        if kind in ("category", "boolean", "integer") and texty and raw_dtype != column.dtype:
            parsed = _via_distinct_values(parsed, column, raw)
        exprs.append(parsed.value.alias(column.name))
        if parsed.shown is not None:
            may_fail.append(column.name)
        # the raw text for now; the second step below keeps it only where the parse failed
        exprs.append(
            (parsed.shown if parsed.shown is not None else pl.lit(None, pl.String)).alias(
                _BAD + column.name
            )
        )
        exprs.append(
            (parsed.unknown if parsed.unknown is not None else pl.lit(None, pl.String)).alias(
                _UNKNOWN + column.name
            )
        )
    parsed_frame = (
        raw.lazy()
        .select(exprs)
        .with_columns(
            pl.when(pl.col(name).is_null()).then(pl.col(_BAD + name)).alias(_BAD + name)
            for name in may_fail
        )
        .collect()
    )
    for name, form in forms.items():
        parsed_frame = _retry_timestamps(parsed_frame, name, form)
    if whole_column_errors:
        _fail_wrong_type_columns(table, parsed_frame, source)
    return _TableState(table, source, raw, parsed_frame, [])


def _fail_wrong_type_columns(table: Table, parsed: pl.DataFrame, source: str) -> None:
    """A column in which no value parses is the wrong type: fail the file, not every row."""
    checked = [c.name for c in table.columns if _kind(c) not in ("text", "category")]
    counts = parsed.select(
        *[pl.col(_BAD + name).count().alias(f"bad:{name}") for name in checked],
        *[pl.col(name).count().alias(f"ok:{name}") for name in checked],
    ).row(0, named=True)
    for name in checked:
        if counts[f"bad:{name}"] and not counts[f"ok:{name}"]:
            row, text = (
                parsed.filter(pl.col(_BAD + name).is_not_null()).select("_row", _BAD + name).row(0)
            )
            kind = _kind(table.column(name))
            raise CTOError(
                f"{source}: column {name} is the wrong type: no value parses as "
                f"{_KIND_PHRASE[kind]} (row {row}: {text!r}); rule type"
            )


def _row_level_checks(state: _TableState) -> None:
    frame = state.parsed.lazy()
    plans = [
        _violations(frame, r.column, r.rule, r.failed, r.message) for r in row_rules(state.table)
    ]
    unique = [c.name for c in state.table.columns if c.unique]
    plans += [_duplicates(frame, name) for name in unique if _may_repeat(state.parsed, name)]
    state.violations.extend(pl.collect_all(plans))


def _may_repeat(parsed: pl.DataFrame, name: str) -> bool:
    """False when the column's values are certainly distinct: as many distinct 64-bit hashes as
    values. Counting distinct hashes costs a tenth of finding the repeated strings (10M ids,
    measured); a repeat or a hash collision sends the column through :func:`_duplicates`."""
    key = pl.col(name).drop_nulls()
    distinct, values = parsed.select(
        key.hash(seed=0).n_unique().alias("distinct"), key.len().alias("values")
    ).row(0)
    return distinct != values


def _duplicates(frame: pl.LazyFrame, name: str) -> pl.LazyFrame:
    """Every row with an id seen in an earlier row; the message names that first row."""
    key = pl.col(name)
    return (
        frame.select("_row", name)
        .filter(key.is_not_null() & key.is_duplicated())
        .with_columns(pl.col("_row").min().over(name).alias("_first"))
        .filter(pl.col("_row") != pl.col("_first"))
        .select(
            "_row",
            pl.lit(name).alias("_column"),
            pl.lit("unique").alias("_rule"),
            pl.format(
                "{} {} already appears in row {}", pl.lit(name), _quoted(key), pl.col("_first")
            ).alias("_message"),
        )
    )


def _reference(
    child: _TableState, column: str, parent: _TableState, parent_column: str
) -> pl.DataFrame:
    """Rows of `child` whose `column` is not among the accepted `parent_column` values."""
    accepted = parent.accepted().lazy().select(pl.col(parent_column).alias(column))
    missing = (
        child.parsed.lazy()
        .select("_row", column)
        .filter(pl.col(column).is_not_null())
        .join(accepted, on=column, how="anti")
        .collect()
    )
    if missing.height == 0:  # the usual case: skip looking up where the parent went
        return pl.DataFrame(schema=_REJECT_SCHEMA)
    first_seen = (
        parent.parsed.lazy()
        .select(pl.col(parent_column).alias(column), "_row")
        .join(missing.lazy().select(column).unique(), on=column, how="semi")
        .group_by(column)
        .agg(pl.col("_row").min().alias("_parent_row"))
    )
    where = pl.lit(parent.source)
    message = (
        pl.when(pl.col("_parent_row").is_null())
        .then(pl.format("{} {} is not in {}", pl.lit(column), _quoted(pl.col(column)), where))
        .otherwise(
            pl.format(
                "{} {} was rejected in {} (row {})",
                pl.lit(column),
                _quoted(pl.col(column)),
                where,
                pl.col("_parent_row"),
            )
        )
    )
    return (
        missing.lazy()
        .join(first_seen, on=column, how="left", maintain_order="left")
        .pipe(_violations, column, "reference", pl.lit(True), message)
        .collect()
    )


def _first_seen_order(customers: _TableState, contacts: _TableState, orders: _TableState):
    """Customers whose first_seen_at is after their first contact or order."""
    first_activity = (
        pl.concat(
            [
                contacts.accepted().lazy().select("customer_id", pl.col("started_at").alias("_at")),
                orders.accepted().lazy().select("customer_id", pl.col("ordered_at").alias("_at")),
            ]
        )
        .group_by("customer_id")
        .agg(pl.col("_at").min())
    )
    message = pl.format(
        "first_seen_at {} is after the customer's first contact or order at {}",
        _iso(pl.col("first_seen_at")),
        _iso(pl.col("_at")),
    )
    return (
        customers.parsed.lazy()
        .select("_row", "customer_id", "first_seen_at")
        .join(first_activity, on="customer_id", how="inner")
        .pipe(
            _violations,
            "first_seen_at",
            "time_order",
            pl.col("first_seen_at") > pl.col("_at"),
            message,
        )
        .collect()
    )


def _order_contact_consistency(orders: _TableState, contacts: _TableState) -> list[pl.DataFrame]:
    """An order's attributed contact belongs to its customer and started before the order."""
    joined = (
        orders.parsed.lazy()
        .select("_row", "customer_id", "ordered_at", "contact_id")
        .filter(pl.col("contact_id").is_not_null())
        .join(
            contacts.accepted()
            .lazy()
            .select(
                "contact_id",
                pl.col("customer_id").alias("_contact_customer"),
                pl.col("started_at").alias("_contact_started"),
            ),
            on="contact_id",
            how="inner",
        )
    )
    other_customer = _violations(
        joined,
        "contact_id",
        "reference",
        pl.col("customer_id").is_not_null()
        & (pl.col("customer_id") != pl.col("_contact_customer")),
        pl.format(
            "contact {} belongs to customer {}, not the order's customer {}",
            _quoted(pl.col("contact_id")),
            _quoted(pl.col("_contact_customer")),
            _quoted(pl.col("customer_id")),
        ),
    )
    before_contact = _violations(
        joined,
        "ordered_at",
        "time_order",
        pl.col("ordered_at") < pl.col("_contact_started"),
        pl.format(
            "ordered_at {} is before its contact {} started at {}",
            _iso(pl.col("ordered_at")),
            _quoted(pl.col("contact_id")),
            _iso(pl.col("_contact_started")),
        ),
    )
    return pl.collect_all([other_customer, before_contact])


def _cross_table_checks(states: dict[str, _TableState]) -> None:
    """References and time order between tables, in the order of CROSS_TABLE_RULES.

    Each check looks at the other table's rows accepted so far, so the accepted tables are
    consistent as a whole: an order pointing at a rejected contact is rejected too, and its
    message says where the contact was rejected.
    """
    contacts, orders, customers = (states.get(n) for n in ("contacts", "orders", "customers"))
    if customers is not None and contacts is not None and orders is not None:
        customers.violations.append(_first_seen_order(customers, contacts, orders))
    if customers is not None:
        for child in (contacts, orders):
            if child is not None:
                child.violations.append(_reference(child, "customer_id", customers, "customer_id"))
    if orders is not None and contacts is not None:
        orders.violations.append(_reference(orders, "contact_id", contacts, "contact_id"))
        orders.violations.extend(_order_contact_consistency(orders, contacts))


def _rejects_frame(state: _TableState) -> pl.DataFrame:
    frames = [v for v in state.violations if v.height]
    reasons = (pl.concat(frames) if frames else pl.DataFrame(schema=_REJECT_SCHEMA)).unique(
        maintain_order=True
    )
    rule_order = {rule: i for i, rule in enumerate(RULES)}
    column_order = {name: i for i, name in enumerate(state.table.names)}
    reasons = reasons.sort(
        "_row",
        pl.col("_column").replace_strict(
            column_order, default=len(column_order), return_dtype=pl.Int32
        ),
        pl.col("_rule").replace_strict(rule_order, default=len(rule_order), return_dtype=pl.Int32),
    )
    original = [c for c in state.raw.columns if c != "_row"]
    rows = state.raw.filter(pl.col("_row").is_in(reasons["_row"].implode()))
    return reasons.join(rows, on="_row", how="left", maintain_order="left").select(
        *REJECT_COLUMNS, *original
    )


def _coerced_frame(name: str, accepted: pl.DataFrame, table: Table) -> pl.DataFrame:
    frames = [
        accepted.lazy()
        .filter(pl.col(_UNKNOWN + c.name).is_not_null())
        .group_by(pl.col(_UNKNOWN + c.name).alias("value"))
        .agg(pl.len().alias("rows"))
        .select(pl.lit(name).alias("table"), pl.lit(c.name).alias("column"), "value", "rows")
        for c in table.columns
        if c.categories is not None and "other" in c.categories
    ]
    empty = pl.DataFrame(schema=_COERCED_SCHEMA)
    return pl.concat([empty, *pl.collect_all(frames)], how="vertical_relaxed").sort(
        "column", "rows", "value", descending=[False, True, False]
    )


def validate_frames(
    raw: Mapping[str, pl.DataFrame | None],
    source: Mapping[str, str] | None = None,
    *,
    partial: bool = False,
) -> ValidationResult:
    """Validate in-memory tables against the contract.

    `raw` maps table names (contacts, orders, customers) to frames of any loose types (CSV text,
    Parquet dtypes, contract dtypes); `source` names each table in messages (default: the table
    name). With ``partial=False`` the required tables must be given and non-empty. With
    ``partial=True`` (an event endpoint validating a batch) tables may be absent or empty,
    references into an absent table are not checked here, and a column in which no value parses
    rejects its rows (rule ``type``) instead of failing the table: a batch of one bad event gets
    a per-row answer.
    """
    unknown = sorted(set(raw) - set(TABLES))
    if unknown:
        raise CTOError(f"unknown table(s) {', '.join(unknown)}; expected {', '.join(TABLES)}")
    source = dict(source or {})
    states: dict[str, _TableState] = {}
    for name, table in TABLES.items():
        frame = raw.get(name)
        where = source.setdefault(name, name)
        if frame is None:
            if table.required and not partial:
                raise CTOError(f"{where}: required table {name} is missing; rule required_table")
            continue
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        if frame.height == 0 and not partial:
            raise CTOError(f"{where}: table {name} has no data rows; rule empty_table")
        frame = _check_columns(table, frame, where)
        states[name] = _parse_table(table, frame, where, whole_column_errors=not partial)

    for state in states.values():
        _row_level_checks(state)
    _cross_table_checks(states)

    tables: dict[str, pl.DataFrame] = {}
    rejects: dict[str, pl.DataFrame] = {}
    summary_rows = []
    coerced = []
    for name, state in states.items():
        accepted = state.accepted()
        coerced.append(_coerced_frame(name, accepted, state.table))
        extras = [c for c in state.raw.columns if c not in state.table.names and c != "_row"]
        # Indexing shares the columns (a select would copy every many-chunked column).
        # Indexing shares the columns (select and drop would copy every many-chunked column).
        kept = accepted[list(state.table.names)]
        if extras:
            kept = (
                accepted[["_row", *state.table.names]]
                .join(
                    state.raw.select("_row", *extras), on="_row", how="left", maintain_order="left"
                )
                .drop("_row")
            )
        tables[name] = kept
        rejects[name] = _rejects_frame(state)
        summary_rows.append(
            {
                "table": name,
                "read": state.raw.height,
                "accepted": accepted.height,
                "rejected": rejects[name]["_row"].n_unique(),
                "coerced_to_other": int(coerced[-1]["rows"].sum()),
                "source": state.source,
            }
        )
        _boundary_check(state.table, tables[name], state.source)
    summary = pl.DataFrame(
        summary_rows,
        schema={
            "table": pl.String,
            "read": pl.Int64,
            "accepted": pl.Int64,
            "rejected": pl.Int64,
            "coerced_to_other": pl.Int64,
            "source": pl.String,
        },
    )
    return ValidationResult(
        tables=tables,
        rejects=rejects,
        summary=summary,
        coerced=pl.concat([pl.DataFrame(schema=_COERCED_SCHEMA), *coerced], how="vertical_relaxed"),
        sources={name: source[name] for name in states},
    )


BOUNDARY_ROWS = 600_000


def _boundary_check(table: Table, accepted: pl.DataFrame, source: str) -> None:
    """The accepted frame must pass the pandera schema; failing it is a bug in this module."""
    import pandera.errors

    # Every row already went through the row rules generated from the same declarations; the
    # schema guards their agreement. Above BOUNDARY_ROWS it checks its head, its tail and a
    # seeded random sample of the rows between (distinct rows, so `unique` still holds), all in
    # the frame's dtypes: at 10M rows a full check cost more CPU than all the row rules together,
    # and pandera's own head/tail/sample options cost 1.5x this (measured).
    checked = accepted
    if accepted.height > BOUNDARY_ROWS:
        part = BOUNDARY_ROWS // 3
        middle = accepted.slice(part, accepted.height - 2 * part)
        checked = pl.concat(
            [accepted.head(part), middle.sample(part, seed=0), accepted.tail(part)],
            rechunk=False,
        )
    try:
        contract_schema(table).validate(checked, lazy=True)
    except pandera.errors.SchemaErrors as exc:  # pragma: no cover - a bug, not a data problem
        raise RuntimeError(
            f"accepted rows of {source} fail the {table.name} contract schema; the row rules and "
            f"the schema disagree:\n{exc}"
        ) from exc


# --------------------------------------------------------------------------------------------
# Loading from disk
# --------------------------------------------------------------------------------------------


def find_table_files(directory: Path) -> dict[str, Path]:
    """The input file of each table in `directory` (``<table>.parquet`` or ``<table>.csv``)."""
    directory = Path(directory)
    if not directory.exists():
        raise CTOError(f"{directory}: no such directory; rule missing_file")
    if not directory.is_dir():
        raise CTOError(f"{directory}: not a directory (expected one holding contacts and orders)")
    found: dict[str, Path] = {}
    for name, table in TABLES.items():
        candidates = [directory / f"{name}{suffix}" for suffix in INPUT_SUFFIXES]
        present = [path for path in candidates if path.exists()]
        if len(present) > 1:
            raise CTOError(
                f"{directory}: both {present[0].name} and {present[1].name} exist; keep one "
                f"(rule ambiguous_file)"
            )
        if present:
            found[name] = present[0]
        elif table.required:
            raise CTOError(
                f"{candidates[0]}: missing file (or {candidates[1].name}); table {name} is "
                f"required; rule missing_file"
            )
    return found


def read_table(path: Path) -> pl.DataFrame:
    """Read one input file as it is: CSV as text (parsed later, per row), Parquet as stored."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
            _fail_duplicate_headers(frame, path)
            return frame
        return pl.read_parquet(path)
    except pl.exceptions.NoDataError as exc:
        raise CTOError(f"{path}: file is empty; rule empty_table") from exc
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CTOError(f"{path}: cannot read the file: {reason}; rule unreadable_file") from exc


def _fail_duplicate_headers(frame: pl.DataFrame, path: Path) -> None:
    """Polars renames a repeated CSV header to `<name>_duplicated_<n>`; which copy is right is
    anyone's guess, so the file fails instead."""
    for name in frame.columns:
        match = re.fullmatch(r"(.+)_duplicated_\d+", name)
        if match and match.group(1) in frame.columns:
            raise CTOError(f"{path}: column {match.group(1)} appears twice; rule duplicate_column")


IMPORT_FILE = "import.json"


def import_meta(directory: Path | str) -> dict:
    """What an importer recorded about a data directory (``import.json``), or {} when none did.

    Keys the commands read: ``source_kind`` (e.g. "olist"), ``recommended_horizon_days`` and
    ``arrival_columns`` (extra contact columns known when a contact arrives: model features).
    """
    path = Path(directory) / IMPORT_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CTOError(f"{path}: not readable as JSON ({exc}); rule unreadable_file") from exc
    if not isinstance(meta, dict):
        raise CTOError(f"{path}: expected a JSON object; rule unreadable_file")
    return meta


def load_and_validate(path: Path | str) -> ValidationResult:
    """Read contacts, orders and (optional) customers from a directory and validate them."""
    files = find_table_files(Path(path))
    raw = {name: read_table(file) for name, file in files.items()}
    return validate_frames(raw, {name: file.name for name, file in files.items()})


# --------------------------------------------------------------------------------------------
# docs/data-contract.md, generated from the declarations
# --------------------------------------------------------------------------------------------

DOC_BEGIN = "<!-- BEGIN GENERATED by features.validate.contract_markdown(); do not edit by hand -->"
DOC_END = "<!-- END GENERATED -->"
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "data-contract.md"


def _column_rules(column: Column) -> str:
    parts = []
    if column.unique:
        parts.append("unique")
    if column.minimum is not None and column.maximum is not None:
        parts.append(f"{_number_text(column.minimum)} ≤ value ≤ {_number_text(column.maximum)}")
    elif column.minimum is not None:
        parts.append(f"≥ {_number_text(column.minimum)}")
    elif column.maximum is not None:
        parts.append(f"≤ {_number_text(column.maximum)}")
    if column.categories is not None:
        values = ", ".join(f"`{c}`" for c in column.categories)
        fallback = "unknown → `other`" if "other" in column.categories else "unknown → rejected"
        parts.append(f"one of {values} ({fallback})")
    if column.references:
        parts.append(f"references `{column.references}`")
    return "; ".join(parts) or "—"


def _example_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def contract_markdown() -> str:
    """The generated part of docs/data-contract.md: tables, columns, rules, example rows."""
    out: list[str] = ["## Tables and columns", ""]
    for table in TABLES.values():
        needed = "required" if table.required else "optional"
        files = " or ".join(f"`{table.name}{s}`" for s in INPUT_SUFFIXES)
        out += [f"### {table.name}", "", f"{table.description}", ""]
        out.append(f"File: {files} ({needed}).")
        if table.time_column:
            out[-1] += f" Time column: `{table.time_column}`."
        out += [
            "",
            "| column | type | nullable | rules | description | example |",
            "|---|---|---|---|---|---|",
        ]
        for c in table.columns:
            nullable = "yes (may be absent)" if c.nullable else "no (required)"
            example = f"`{_example_text(c.example)}`" if c.example is not None else "(null)"
            out.append(
                f"| `{c.name}` | {_KIND_DOC[_kind(c)]} | {nullable} | {_column_rules(c)} | "
                f"{c.description} | {example} |"
            )
        out += ["", "Example row (CSV):", "", "```csv", ",".join(table.names)]
        out.append(",".join(_example_text(c.example) for c in table.columns))
        out += ["```", ""]
    out += ["## Rules", "", "| rule | what it checks |", "|---|---|"]
    out += [f"| `{rule}` | {text} |" for rule, text in RULES.items()]
    out += [
        "",
        "### Cross-table rules",
        "",
        "Checked after the row rules, in this order, against the other table's accepted rows.",
        "",
        "| table | column | rule | check |",
        "|---|---|---|---|",
    ]
    out += [f"| {t} | `{c}` | `{r}` | {text} |" for t, c, r, text in CROSS_TABLE_RULES]
    return "\n".join(out).rstrip() + "\n"


def _doc_with_generated(text: str) -> str:
    pattern = re.compile(re.escape(DOC_BEGIN) + r".*?" + re.escape(DOC_END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"docs/data-contract.md lacks the markers {DOC_BEGIN} ... {DOC_END}")
    generated = f"{DOC_BEGIN}\n\n{contract_markdown()}\n{DOC_END}"
    return pattern.sub(lambda _: generated, text)


def generated_section(text: str) -> str:
    """The text between the generated-section markers of a data-contract document."""
    start = text.index(DOC_BEGIN) + len(DOC_BEGIN)
    return text[start : text.index(DOC_END)].strip() + "\n"


def update_contract_doc(path: Path = DOC_PATH) -> bool:
    """Regenerate the generated part of docs/data-contract.md; True when it changed."""
    old = path.read_text()
    new = _doc_with_generated(old)
    if new != old:
        path.write_text(new)
    return new != old


if __name__ == "__main__":
    changed = update_contract_doc()
    print(f"{DOC_PATH}: {'updated' if changed else 'up to date'}", file=sys.stderr)
