"""`cto report` from the command line: PDF through headless Chromium, no-model fallback, bad input."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from cto.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _point_settings_at(monkeypatch, settings) -> None:
    monkeypatch.setenv("CTO_TRACKING_URI", settings.tracking_uri)
    monkeypatch.setenv("CTO_ARTIFACT_LOCATION", settings.artifact_location)


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    """A fresh MLflow store with no registered model; yields a temp directory for outputs."""
    monkeypatch.setenv("CTO_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    return tmp_path


@pytest.mark.usefixtures("trained")
def test_report_prints_to_pdf(sim_dir, mlflow_settings, tmp_path, monkeypatch, capsys):
    _point_settings_at(monkeypatch, mlflow_settings)
    out = tmp_path / "report.pdf"
    assert main(["report", str(sim_dir), "--out", str(out), "--format", "pdf"]) == 0
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(data) > 100_000  # charts and tables, several pages
    assert data.count(b"/Type /Page") >= 3 or data.count(b"/Type/Page") >= 3
    assert f"wrote {out}" in capsys.readouterr().out


def test_report_without_models_still_shows_the_data(sim_dir, empty_registry):
    out = empty_registry / "report.html"
    assert (
        main(
            [
                "report",
                str(sim_dir),
                "--since",
                "2026-03-02",
                "--until",
                "2026-03-29",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    page = out.read_text()
    assert 'data-kpi="contact_to_order_ratio"' in page
    assert "02 Mar 2026 – 29 Mar 2026" in page
    assert "No champion conversion model is registered" in page
    assert (
        "no version of cto-conversion-after-contact carries the alias" not in page
    )  # nothing registered at all


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--since", "2026-03-10", "--until", "2026-03-01"], "is before --since"),
        (["--since", "2031-01-01", "--until", "2031-01-31"], "has no data"),
    ],
)
def test_report_rejects_a_bad_period(sim_dir, empty_registry, capsys, arguments, message):
    assert main(["report", str(sim_dir), "--out", str(empty_registry / "r.html"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_report_names_a_missing_data_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_report_filters_contacts_by_channel_and_segment(sim_dir, empty_registry):
    from features.kpis import kpi_table
    from features.labels import label_contacts
    from features.validate import load_and_validate
    from reports.kpis import Period, with_segment

    out = empty_registry / "phone.html"
    arguments = ["report", str(sim_dir), "--since", "2026-03-02", "--until", "2026-03-29"]
    filters = ["--filter", "channel=phone", "--filter", "segment=enterprise"]
    assert main([*arguments, *filters, "--out", str(out)]) == 0
    page = out.read_text()
    assert "only contacts with channel phone and customer segment enterprise" in page
    tables = load_and_validate(sim_dir).tables
    labeled = with_segment(
        label_contacts(tables["contacts"], tables["orders"], 7, 14), tables["customers"]
    )
    period = Period.from_dates(date(2026, 3, 2), date(2026, 3, 29))
    subset = labeled.filter(
        period.contains()
        & (pl.col("channel").cast(pl.String) == "phone")
        & (pl.col("segment") == "enterprise")
    )
    expected = kpi_table(subset).row(0, named=True)["contact_to_order_ratio"]
    assert f'data-value="{expected!r}"' in page
    by_channel = pl.read_csv(empty_registry / "phone_tables" / "by-channel.csv")
    assert by_channel["Group"].to_list() == ["phone"]
    assert by_channel["Contacts"].sum() == subset.height


def test_report_names_a_filter_value_that_does_not_exist(sim_dir, empty_registry, capsys):
    out = empty_registry / "r.html"
    assert main(["report", str(sim_dir), "--filter", "channel=fax", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "channel=fax" in err and "values in the data" in err
