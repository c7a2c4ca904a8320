"""Bad files anywhere in the CLI: one line naming the file and the rule, exit 2, no traceback."""

from __future__ import annotations

import os

import pytest

from cto.cli import main


@pytest.fixture()
def bad_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(os.urandom(4096) + b"\x00")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b,label\n")
    fake_parquet = tmp_path / "table.parquet"
    fake_parquet.write_bytes(b"not parquet at all")
    return {"empty": empty, "binary": binary, "header": header_only, "parquet": fake_parquet}


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("empty", "empty_file"),
        ("binary", "unreadable_file"),
        ("header", "empty_file"),
        ("parquet", "unreadable_file"),
    ],
)
def test_train_table_bad_file(bad_files, kind, rule, capsys):
    assert main(["train", "--table", str(bad_files[kind]), "--label", "label"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(bad_files[kind]) in lines[0] and rule in lines[0]


@pytest.mark.parametrize("content", [b"", os.urandom(4096)])
def test_validate_and_import_bad_contacts_file(tmp_path, content, capsys):
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "contacts.csv").write_bytes(content)
    (directory / "orders.csv").write_text("order_id,customer_id,ordered_at,amount\n")
    assert main(["validate", str(directory)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contacts.csv" in err[0] and "rule" in err[0]
    olist = tmp_path / "olist"
    olist.mkdir()
    (olist / "olist_marketing_qualified_leads_dataset.csv").write_bytes(content)
    (olist / "olist_closed_deals_dataset.csv").write_bytes(content)
    assert main(["import", "olist", str(olist), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "olist_marketing_qualified_leads_dataset.csv" in err[0]
