"""The data contract: every rule rejects the row that breaks it, and `cto validate` says so.

Cases start from the small hand-made tables in tests/fixtures/contract/ (all valid) and change
one cell, so each test shows exactly which value breaks which rule.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from cto.cli import main
from features.errors import CTOError
from features.schema import TABLES
from features.validate import RULES, load_and_validate, validate_frames

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "contract"


def read_fixture(table: str) -> pl.DataFrame:
    return pl.read_csv(FIXTURES / f"{table}.csv", infer_schema=False)


def make_dir(tmp_path: Path, edits: dict[str, pl.DataFrame] | None = None) -> Path:
    """The fixture tables as CSV in a fresh directory, with some tables replaced."""
    out = tmp_path / "data"
    out.mkdir(parents=True)
    for table in ("contacts", "orders", "customers"):
        frame = (edits or {}).get(table)
        if frame is None:
            shutil.copy(FIXTURES / f"{table}.csv", out / f"{table}.csv")
        else:
            frame.write_csv(out / f"{table}.csv")
    return out


def set_cell(table: str, row: int, column: str, value: str | None) -> dict[str, pl.DataFrame]:
    """The fixture `table` with one cell (1-based data row) changed."""
    frame = read_fixture(table).with_row_index("_i", offset=1)
    frame = frame.with_columns(
        pl.when(pl.col("_i") == row)
        .then(pl.lit(value, dtype=pl.String))
        .otherwise(pl.col(column))
        .alias(column)
    ).drop("_i")
    return {table: frame}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["validate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass(frozen=True)
class Case:
    name: str
    table: str
    row: int
    column: str
    value: str | None
    rule: str
    message: str
    # (table, row, column, rule) of further rows the change rejects through other rules
    also: tuple[tuple[str, int, str, str], ...] = ()


CASES = [
    Case(
        "bad timestamp",
        "contacts",
        2,
        "started_at",
        "yesterday",
        "type",
        "'yesterday' is not an ISO-8601 timestamp",
    ),
    Case("bad number", "contacts", 5, "handle_seconds", "ten", "type", "'ten' is not a number"),
    Case(
        "fractional count", "contacts", 5, "transfers", "1.5", "type", "'1.5' is not a whole number"
    ),
    Case(
        "bad boolean",
        "contacts",
        4,
        "resolved",
        "maybe",
        "type",
        "'maybe' is not a boolean (true/false/1/0/yes/no)",
    ),
    Case(
        "null in non-nullable",
        "contacts",
        5,
        "customer_id",
        "",
        "not_null",
        "missing value (not nullable)",
    ),
    Case(
        "null timestamp",
        "orders",
        3,
        "ordered_at",
        None,
        "not_null",
        "missing value (not nullable)",
    ),
    Case(
        "negative wait", "contacts", 2, "wait_seconds", "-3", "range", "-3.0 is below the minimum 0"
    ),
    Case(
        "too many transfers",
        "contacts",
        2,
        "transfers",
        "99",
        "range",
        "99 is above the maximum 50",
    ),
    Case("NaN amount", "orders", 3, "amount", "NaN", "range", "NaN is not a finite number"),
    Case(
        "infinite wait",
        "contacts",
        2,
        "wait_seconds",
        "inf",
        "range",
        "inf is above the maximum 2592000",
    ),
    Case(
        "unknown direction",
        "contacts",
        4,
        "direction",
        "sideways",
        "enum",
        "'sideways' is not one of: inbound, outbound",
    ),
    Case(
        "unknown handler",
        "contacts",
        4,
        "handled_by",
        "human",
        "enum",
        "'human' is not one of: agent, bot",
    ),
    Case(
        "duplicate contact id",
        "contacts",
        5,
        "contact_id",
        "c-001",
        "unique",
        "contact_id 'c-001' already appears in row 1",
    ),
    Case(
        "duplicate customer id",
        "customers",
        4,
        "customer_id",
        "u-001",
        "unique",
        "customer_id 'u-001' already appears in row 1",
        also=(("orders", 4, "customer_id", "reference"),),
    ),
    Case(
        "order of unknown customer",
        "orders",
        4,
        "customer_id",
        "u-999",
        "reference",
        "customer_id 'u-999' is not in customers.csv",
    ),
    Case(
        "contact of unknown customer",
        "contacts",
        2,
        "customer_id",
        "u-777",
        "reference",
        "customer_id 'u-777' is not in customers.csv",
    ),
    Case(
        "order of unknown contact",
        "orders",
        3,
        "contact_id",
        "c-999",
        "reference",
        "contact_id 'c-999' is not in contacts.csv",
    ),
    Case(
        "order's contact of another customer",
        "orders",
        3,
        "contact_id",
        "c-001",
        "reference",
        "contact 'c-001' belongs to customer 'u-001', not the order's customer 'u-003'",
    ),
    Case(
        "order before its contact",
        "orders",
        1,
        "ordered_at",
        "2026-03-01T00:00:00Z",
        "time_order",
        "ordered_at 2026-03-01T00:00:00Z is before its contact 'c-001' started at "
        "2026-03-02T09:15:00Z",
    ),
    Case(
        "first seen after first contact",
        "customers",
        3,
        "first_seen_at",
        "2026-03-07T00:00:00Z",
        "time_order",
        "first_seen_at 2026-03-07T00:00:00Z is after the customer's first contact or order "
        "at 2026-03-06T16:45:10.250Z",
        also=(
            ("contacts", 4, "customer_id", "reference"),
            ("contacts", 5, "customer_id", "reference"),
            ("orders", 3, "customer_id", "reference"),
        ),
    ),
]


def test_every_rule_has_a_failing_row_case():
    assert {case.rule for case in CASES} == set(RULES)


def test_fixture_is_valid_and_extra_columns_are_kept(tmp_path, capsys):
    code, out, err = cli(capsys, FIXTURES)
    assert code == 0, out + err
    assert "OK" in out
    result = load_and_validate(FIXTURES)
    assert result.ok
    contacts = result.tables["contacts"]
    assert contacts.columns[-1] == "campaign"  # an extra column, kept as read
    assert contacts["campaign"].to_list() == ["spring", "spring", None, "autumn", None]
    for name, table in TABLES.items():
        assert result.tables[name].select(table.names).schema == pl.Schema(table.polars_schema)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_rule_rejects_the_row_and_the_cli_names_it(case: Case, tmp_path, capsys):
    data = make_dir(tmp_path, set_cell(case.table, case.row, case.column, case.value))
    code, out, err = cli(capsys, data, "--rejects", tmp_path / "rejects")
    assert code == 1, out + err
    source = f"{case.table}.csv"
    assert f"{source} row {case.row}, column {case.column}, rule {case.rule}: {case.message}" in out

    result = load_and_validate(data)
    rejects = result.rejects[case.table]
    reasons = rejects.filter(pl.col("_row") == case.row).select("_column", "_rule", "_message")
    assert (case.column, case.rule, case.message) in reasons.rows()
    # the rejected row keeps what was read, and is gone from the accepted table
    key = TABLES[case.table].columns[0].name
    row_key = rejects.filter(pl.col("_row") == case.row)[key][0]
    if case.rule != "unique":
        assert row_key not in result.tables[case.table][key].to_list()
    expected_rejects = {(case.table, case.row)} | {(t, r) for t, r, _, _ in case.also}
    got = {(name, row) for name, frame in result.rejects.items() for row in frame["_row"].unique()}
    assert got == expected_rejects
    for table, row, column, rule in case.also:
        assert (row, column, rule) in result.rejects[table].select(
            "_row", "_column", "_rule"
        ).rows()
    # the rejects files hold the same rows, readable as Parquet and CSV
    written = pl.read_parquet(tmp_path / "rejects" / f"{case.table}_rejects.parquet")
    assert written.equals(rejects)
    as_csv = pl.read_csv(tmp_path / "rejects" / f"{case.table}_rejects.csv", infer_schema=False)
    assert as_csv["_rule"].to_list() == rejects["_rule"].to_list()
    assert as_csv.columns[:4] == ["_row", "_column", "_rule", "_message"]


def test_read_equals_accepted_plus_rejected_on_distinct_rows(tmp_path, capsys):
    contacts = read_fixture("contacts").with_columns(
        # row 2 breaks two rules, row 3 one; a row counts once however many rules it breaks
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit("-1"))
        .otherwise("wait_seconds")
        .alias("wait_seconds"),
        pl.when(pl.int_range(pl.len()) == 1)
        .then(pl.lit("sideways"))
        .otherwise("direction")
        .alias("direction"),
        pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.lit("999"))
        .otherwise("transfers")
        .alias("transfers"),
    )
    data = make_dir(tmp_path, {"contacts": contacts})
    result = load_and_validate(data)
    summary = {r["table"]: r for r in result.summary.iter_rows(named=True)}
    assert summary["contacts"]["read"] == 5
    assert summary["contacts"]["rejected"] == 2
    assert summary["contacts"]["accepted"] == 3
    assert result.rejects["contacts"].height == 3  # one line per reason
    for row in summary.values():
        assert row["read"] == row["accepted"] + row["rejected"]
        assert result.tables[row["table"]].height == row["accepted"]
    # orders whose contact was rejected are rejected too, and say where
    assert result.rejects["orders"]["_row"].to_list() == [2]
    assert result.rejects["orders"]["_message"][0] == (
        "contact_id 'c-003' was rejected in contacts.csv (row 3)"
    )
    code, out, _ = cli(capsys, data)
    assert code == 1
    assert "contacts.csv column wait_seconds, rule range: 1 row(s)" in out
    line = next(x for x in out.splitlines() if x.startswith("contacts "))
    assert line.split()[2:5] == ["5", "3", "2"]


def test_unknown_category_becomes_other_and_is_counted(tmp_path, capsys):
    contacts = read_fixture("contacts").with_columns(
        channel=pl.Series(["fax", "Phone", " telex ", "fax", "chat"]),
        intent=pl.Series(["pricing", "gossip", "pricing", "pricing", "pricing"]),
    )
    data = make_dir(tmp_path, {"contacts": contacts})
    result = load_and_validate(data)
    assert result.ok
    assert result.tables["contacts"]["channel"].to_list() == [
        "other",
        "phone",
        "other",
        "other",
        "chat",
    ]
    assert result.tables["contacts"]["intent"][1] == "other"
    contacts_summary = result.summary.filter(pl.col("table") == "contacts")
    assert contacts_summary["coerced_to_other"][0] == 4
    assert sorted(result.coerced.select("column", "value", "rows").rows()) == [
        ("channel", "fax", 2),
        ("channel", "telex", 1),
        ("intent", "gossip", 1),
    ]
    code, out, _ = cli(capsys, data)
    assert code == 0
    assert "contacts.csv column channel: 3 row(s): 'fax' x2, 'telex' x1" in out


def test_timestamps_and_booleans_are_parsed_to_contract_types():
    contacts = read_fixture("contacts")
    result = validate_frames({"contacts": contacts, "orders": read_fixture("orders")})
    started = result.tables["contacts"]["started_at"]
    assert started.dtype == pl.Datetime("us", "UTC")
    utc = "UTC"
    assert started.to_list() == [
        pl.Series(["2026-03-02 09:15:00"]).str.to_datetime(time_zone=utc)[0],
        pl.Series(["2026-03-04 09:00:00"]).str.to_datetime(time_zone=utc)[0],  # +01:00
        pl.Series(["2026-03-05 08:30:00"]).str.to_datetime(time_zone=utc)[0],  # naive = UTC
        pl.Series(["2026-03-06 16:45:10.250"]).str.to_datetime(time_zone=utc)[0],
        pl.Series(["2026-03-07 11:00:00"]).str.to_datetime(time_zone=utc)[0],
    ]
    # true/false, yes/no, 1/0 in the fixture
    assert result.tables["contacts"]["resolved"].to_list() == [True, False, True, True, True]
    assert result.tables["contacts"]["abandoned"].to_list() == [False] * 5
    # the only date-only value: midnight UTC
    customers = validate_frames(
        {
            "contacts": contacts,
            "orders": read_fixture("orders"),
            "customers": read_fixture("customers"),
        }
    ).tables["customers"]
    assert str(customers["first_seen_at"][2]) == "2026-01-01 00:00:00+00:00"


def test_parquet_input_with_its_own_types(tmp_path):
    result = load_and_validate(FIXTURES)
    out = tmp_path / "pq"
    out.mkdir(parents=True)
    naive = result.tables["contacts"].with_columns(
        pl.col("started_at").dt.replace_time_zone(None),  # a naive Parquet datetime is UTC
        pl.col("channel").cast(pl.String),
        pl.col("transfers").cast(pl.Int64),
    )
    naive.write_parquet(out / "contacts.parquet")
    result.tables["orders"].write_parquet(out / "orders.parquet")
    again = load_and_validate(out)
    assert again.ok
    assert again.tables["contacts"].equals(result.tables["contacts"])
    assert "customers" not in again.tables  # optional


def test_in_memory_frames_and_reject_records():
    contacts = load_and_validate(FIXTURES).tables["contacts"]
    broken = contacts.with_columns(
        pl.when(pl.col("contact_id") == "c-002")
        .then(-1.0)
        .otherwise("wait_seconds")
        .alias("wait_seconds")
    )
    result = validate_frames({"contacts": broken, "orders": read_fixture("orders")})
    assert result.sources == {"contacts": "contacts", "orders": "orders"}
    assert result.reject_records() == [
        {
            "table": "contacts",
            "source": "contacts",
            "row": 2,
            "index": 1,
            "column": "wait_seconds",
            "rule": "range",
            "message": "-1.0 is below the minimum 0",
        }
    ]
    with pytest.raises(CTOError, match=r"contacts row 2, column wait_seconds, rule range"):
        result.raise_if_rejected()


def test_partial_batch_checks_only_what_it_has():
    with pytest.raises(CTOError, match="required table orders is missing"):
        validate_frames({"contacts": read_fixture("contacts")})
    result = validate_frames({"contacts": read_fixture("contacts")}, partial=True)
    assert result.ok and set(result.tables) == {"contacts"}
    empty = validate_frames({"orders": read_fixture("orders").head(0)}, partial=True)
    assert empty.summary.row(0, named=True)["read"] == 0
    # one bad event in a batch is a per-row answer, not a failed batch
    event = read_fixture("contacts").head(1).with_columns(wait_seconds=pl.lit("slow"))
    with pytest.raises(CTOError, match="column wait_seconds is the wrong type"):
        validate_frames({"contacts": event, "orders": read_fixture("orders")})
    batch = validate_frames({"contacts": event}, partial=True)
    assert batch.reject_records() == [
        {
            "table": "contacts",
            "source": "contacts",
            "row": 1,
            "index": 0,
            "column": "wait_seconds",
            "rule": "type",
            "message": "'slow' is not a number",
        }
    ]


def test_missing_directory_and_missing_file(tmp_path, capsys):
    code, out, err = cli(capsys, tmp_path / "nowhere")
    assert code == 2 and "no such directory" in err and "Traceback" not in err
    data = make_dir(tmp_path)
    (data / "orders.csv").unlink()
    code, out, err = cli(capsys, data)
    assert code == 2
    assert err.strip() == (
        f"error: {data / 'orders.parquet'}: missing file (or orders.csv); table orders is "
        "required; rule missing_file"
    )
    # customers is optional
    (data / "customers.csv").unlink()
    shutil.copy(FIXTURES / "orders.csv", data / "orders.csv")
    code, out, err = cli(capsys, data)
    assert code == 0, out + err
    assert "customers" not in out


def test_both_csv_and_parquet_is_ambiguous(tmp_path, capsys):
    data = make_dir(tmp_path)
    read_fixture("orders").write_parquet(data / "orders.parquet")
    code, _, err = cli(capsys, data)
    assert code == 2 and "both orders.parquet and orders.csv exist" in err


def test_unreadable_files(tmp_path, capsys):
    data = make_dir(tmp_path)
    (data / "orders.csv").unlink()
    (data / "orders.parquet").write_bytes(b"not a parquet file at all")
    code, _, err = cli(capsys, data)
    assert code == 2
    assert err.startswith(f"error: {data / 'orders.parquet'}: cannot read the file: ")
    assert err.strip().endswith("rule unreadable_file") and len(err.strip().splitlines()) == 1
    (data / "orders.parquet").unlink()
    (data / "orders.csv").write_bytes(b"order_id,customer_id\no-1,\xff\xfe\n")
    code, _, err = cli(capsys, data)
    assert code == 2 and "orders.csv: cannot read the file" in err and "unreadable_file" in err


def test_repeated_header_fails_the_file(tmp_path, capsys):
    data = make_dir(tmp_path)
    text = (data / "orders.csv").read_text().replace("amount,contact_id", "amount,amount")
    (data / "orders.csv").write_text(text)
    code, _, err = cli(capsys, data)
    assert code == 2
    assert (
        err.strip()
        == f"error: {data / 'orders.csv'}: column amount appears twice; rule duplicate_column"
    )


def test_empty_tables(tmp_path, capsys):
    data = make_dir(tmp_path, {"contacts": read_fixture("contacts").head(0)})
    code, _, err = cli(capsys, data)
    assert code == 2
    assert err.strip() == "error: contacts.csv: table contacts has no data rows; rule empty_table"
    (data / "contacts.csv").write_bytes(b"")
    code, _, err = cli(capsys, data)
    assert code == 2 and "contacts.csv: file is empty; rule empty_table" in err


def test_column_of_the_wrong_type_fails_the_file(tmp_path, capsys):
    contacts = read_fixture("contacts").with_columns(wait_seconds=pl.lit("slow"))
    code, _, err = cli(capsys, make_dir(tmp_path, {"contacts": contacts}))
    assert code == 2
    assert err.strip() == (
        "error: contacts.csv: column wait_seconds is the wrong type: no value parses as a number "
        "(row 1: 'slow'); rule type"
    )
    # a Parquet column whose dtype cannot be the contract's
    orders = load_and_validate(FIXTURES).tables["orders"].with_columns(amount=pl.lit(True))
    with pytest.raises(
        CTOError, match=r"orders: column amount has type Boolean, expected a number"
    ):
        validate_frames({"contacts": read_fixture("contacts"), "orders": orders})


def test_missing_required_column(tmp_path, capsys):
    contacts = read_fixture("contacts").rename({"started_at": "Started_At"}).drop("wait_seconds")
    code, _, err = cli(capsys, make_dir(tmp_path, {"contacts": contacts}))
    assert code == 2
    assert err.strip() == (
        "error: contacts.csv: missing required column(s) started_at, wait_seconds (found "
        "'Started_At' for 'started_at': names are case-sensitive); rule required_column"
    )


def test_absent_nullable_columns_are_filled_with_nulls():
    contacts = read_fixture("contacts").drop("agent_id", "dropoff_reason")
    result = validate_frames({"contacts": contacts, "orders": read_fixture("orders")})
    assert result.ok
    assert result.tables["contacts"]["dropoff_reason"].null_count() == 5


def test_max_rejected_lets_a_few_rejects_pass(tmp_path, capsys):
    data = make_dir(tmp_path, set_cell("contacts", 2, "wait_seconds", "-3"))
    assert cli(capsys, data, "--max-rejected", "0.25")[0] == 0
    assert cli(capsys, data, "--max-rejected", "0.1")[0] == 1


def test_cli_as_a_process_exits_non_zero_without_traceback(tmp_path):
    cto = Path(sys.executable).parent / "cto"
    data = make_dir(tmp_path)
    (data / "contacts.csv").write_text("contact_id,customer_id\nc-1,u-1\n")
    done = subprocess.run(
        [cto, "validate", data], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip().startswith(
        "error: contacts.csv: missing required column(s) started_at"
    )
    assert len(done.stderr.strip().splitlines()) == 1

    bad = make_dir(tmp_path / "bad", set_cell("orders", 4, "customer_id", "u-999"))
    done = subprocess.run(
        [cto, "validate", bad], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "orders.csv row 4, column customer_id, rule reference" in done.stdout
    assert "Traceback" not in done.stderr


def test_accepted_rows_are_written_and_validate_again(tmp_path, capsys):
    data = make_dir(tmp_path, set_cell("contacts", 2, "wait_seconds", "-3"))
    code, out, _ = cli(capsys, data, "--accepted", tmp_path / "clean", "--show", "0")
    assert code == 1
    assert "rule range: 1 row(s)" in out and "rejected rows (at most" not in out
    clean = load_and_validate(tmp_path / "clean")
    assert clean.ok
    assert clean.tables["contacts"].height == 4
    assert clean.tables["contacts"]["campaign"].to_list() == ["spring", None, "autumn", None]
