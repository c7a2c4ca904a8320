"""The pandera boundary schema, the row rules and docs/data-contract.md all follow features.schema."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandera.errors
import polars as pl
import pytest

from features.schema import CONTACTS, TABLES
from features.validate import (
    DOC_PATH,
    contract_markdown,
    contract_schema,
    generated_section,
    load_and_validate,
    validate_frames,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contract"


@pytest.fixture(scope="module")
def accepted() -> dict[str, pl.DataFrame]:
    return load_and_validate(FIXTURES).tables


def test_data_contract_doc_is_generated_from_the_schema():
    assert generated_section(DOC_PATH.read_text()) == contract_markdown()
    text = contract_markdown()
    for table in TABLES.values():
        assert f"### {table.name}" in text
        for column in table.columns:
            assert f"| `{column.name}` |" in text


@pytest.mark.parametrize("name", list(TABLES))
def test_pandera_schema_is_derived_from_the_declarations(name):
    table = TABLES[name]
    schema = contract_schema(name)
    assert list(schema.columns) == table.names
    for column in table.columns:
        derived = schema.columns[column.name]
        assert derived.dtype.type == column.dtype
        assert derived.nullable == column.nullable
        assert derived.unique == column.unique


@pytest.mark.parametrize("name", list(TABLES))
def test_accepted_frames_pass_the_boundary_schema(name, accepted):
    frame = accepted[name]
    assert contract_schema(name).validate(frame, lazy=True).equals(frame)


@pytest.mark.parametrize(
    ("column", "bad_value", "rule"),
    [
        ("wait_seconds", -1.0, "range"),
        ("transfers", 51, "range"),
        ("contact_id", "c-001", "unique"),
        ("customer_id", None, "not_null"),
    ],
)
def test_row_rules_and_pandera_reject_the_same_typed_rows(accepted, column, bad_value, rule):
    """A typed frame breaking a rule fails the pandera schema, and the row rules reject it."""
    contacts = accepted["contacts"]
    broken = contacts.with_columns(
        pl.when(pl.col("contact_id") == "c-002")
        .then(pl.lit(bad_value, dtype=CONTACTS.column(column).dtype))
        .otherwise(pl.col(column))
        .alias(column)
    )
    with pytest.raises(pandera.errors.SchemaErrors):
        contract_schema("contacts").validate(broken, lazy=True)
    result = validate_frames({"contacts": broken, "orders": accepted["orders"]})
    assert (2, column, rule) in result.rejects["contacts"].select("_row", "_column", "_rule").rows()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T09:15:00Z", datetime(2026, 3, 2, 9, 15, tzinfo=UTC)),
        ("2026-03-02t09:15:00z", None),  # a lower-case T is not ISO-8601 as written here
        ("2026-03-02T09:15:00+02:00", datetime(2026, 3, 2, 7, 15, tzinfo=UTC)),
        ("2026-03-02T09:15:00-0530", datetime(2026, 3, 2, 14, 45, tzinfo=UTC)),
        ("2026-03-02 09:15:00", datetime(2026, 3, 2, 9, 15, tzinfo=UTC)),
        ("2026-03-02T09:15:00.123456", datetime(2026, 3, 2, 9, 15, 0, 123456, tzinfo=UTC)),
        ("2026-03-02T09:15", datetime(2026, 3, 2, 9, 15, tzinfo=UTC)),
        ("2026-03-02T09:15+01:00", datetime(2026, 3, 2, 8, 15, tzinfo=UTC)),
        ("2026-03-02", datetime(2026, 3, 2, tzinfo=UTC)),
        ("2026-02-30T10:00:00Z", None),
        ("02/03/2026 09:15", None),
        ("1772442900", None),
    ],
)
def test_timestamp_forms(accepted, text, expected):
    contacts = pl.read_csv(FIXTURES / "contacts.csv", infer_schema=False)
    contacts = contacts.with_columns(
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit(text))
        .otherwise("started_at")
        .alias("started_at")
    )
    result = validate_frames({"contacts": contacts, "orders": accepted["orders"]}, partial=True)
    if expected is None:
        assert result.rejects["contacts"].select("_row", "_column", "_rule").rows() == [
            (2, "started_at", "type")
        ]
    else:
        assert result.ok
        assert result.tables["contacts"]["started_at"][1] == expected


def test_typed_frames_need_no_parsing_and_keep_their_values(accepted):
    again = validate_frames(accepted)
    assert again.ok
    for name, frame in accepted.items():
        assert again.tables[name].equals(frame)


def test_rejects_with_nested_extra_columns_are_written_as_csv(accepted, tmp_path):
    contacts = accepted["contacts"].with_columns(
        tags=pl.Series([["a"], [], ["b", "c"], None, ["d"]]),
        wait_seconds=pl.Series([1.0, -1.0, 2.0, 3.0, 4.0]),
    )
    result = validate_frames({"contacts": contacts, "orders": accepted["orders"]})
    assert result.tables["contacts"]["tags"].dtype == pl.List(pl.String)
    written = result.write_rejects(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        f"{t}_rejects.{ext}" for t in ("contacts", "orders") for ext in ("csv", "parquet")
    )
    rows = pl.read_csv(tmp_path / "contacts_rejects.csv", infer_schema=False)
    assert rows["tags"].to_list() == ['{"tags":[]}']
    assert pl.read_csv(tmp_path / "orders_rejects.csv").height == 0
