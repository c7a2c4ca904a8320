"""Real data: the Olist marketing funnel through import -> validate -> labels -> KPIs -> features.

The data set stays in ../shared/data (test-only licence); everything written goes to tmp_path.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from cto.cli import main
from features.kpis import kpi_table
from features.labels import label_contacts
from features.olist import DEALS_FILE, LEADS_FILE, ORIGIN_CHANNEL, REJECTS_FILE, import_olist
from features.pipeline import build_features
from features.rates import RATE_COLUMNS, compute_rates, join_rates
from features.registry import feature_names
from features.schema import CONTACTS, CUSTOMERS, ORDERS
from features.spill import contact_rates
from features.validate import load_and_validate

HORIZON = 90  # leads take weeks to close: a 7-day horizon would label most deals as lost
FIRST_DEAL = "2017-12-05"  # the deals file starts here; earlier leads are left out by the import
KEPT_LEADS = 6_172


@pytest.fixture(scope="module")
def olist_src(shared_data):
    return shared_data / "olist-marketing-funnel"


@pytest.fixture(scope="module")
def imported(olist_src, tmp_path_factory):
    out = tmp_path_factory.mktemp("olist")
    result = import_olist(olist_src, out)
    return result, load_and_validate(out)


@pytest.fixture(scope="module")
def deals(olist_src):
    return pl.read_csv(olist_src / DEALS_FILE, infer_schema=False)


def test_import_counts_and_contract(imported, olist_src):
    result, validation = imported
    leads = pl.read_csv(olist_src / LEADS_FILE, infer_schema=False)
    early = leads.filter(pl.col("first_contact_date") < FIRST_DEAL).height
    # Every lead is either written or left out with its reason: none disappears.
    assert result.contacts + result.rejected_leads == leads.height == 8_000
    assert result.rejected == {"before_deal_records": early, "deal_before_first_contact": 1}
    assert (result.contacts, result.orders, result.customers) == (KEPT_LEADS, 790, KEPT_LEADS)
    assert result.first_order_at.startswith(FIRST_DEAL)
    rejects = pl.read_csv(result.out_dir / REJECTS_FILE)
    assert rejects.height == result.rejected_leads and rejects["had_deal"].sum() == 52
    assert rejects["_message"].str.len_chars().min() > 20
    assert result.checksums_match
    contacts = pl.read_parquet(result.out_dir / "contacts.parquet")
    assert contacts.columns == [*CONTACTS.names, "landing_page_id", "origin"]
    assert pl.read_parquet(result.out_dir / "orders.parquet").columns == ORDERS.names
    assert pl.read_parquet(result.out_dir / "customers.parquet").columns == CUSTOMERS.names
    # Every origin maps to a contract channel; search traffic arrives through web forms.
    by_origin = dict(contacts.group_by("origin").agg(pl.col("channel").first()).iter_rows())
    assert by_origin["paid_search"] == "web_form" and by_origin["email"] == "email"
    assert set(by_origin) <= set(ORIGIN_CHANNEL)


def test_no_deal_column_reaches_a_lead(imported, deals):
    result, _ = imported
    deal_only = set(deals.columns) - {"mql_id"}
    for name in ("contacts", "customers"):
        columns = set(pl.read_parquet(result.out_dir / f"{name}.parquet").columns)
        assert not columns & deal_only, name
    contacts = pl.read_parquet(result.out_dir / "contacts.parquet")
    # The SDR would be the natural agent, but it only exists for won leads.
    assert contacts["agent_id"].null_count() == contacts.height
    # Won and lost leads look the same in every after-contact field.
    won = contacts["contact_id"].is_in(deals["mql_id"].implode())
    constant = [
        "wait_seconds",
        "handle_seconds",
        "transfers",
        "abandoned",
        "resolved",
        "handled_by",
    ]
    for column in constant:
        assert contacts.filter(won)[column].n_unique() == 1
        assert contacts.filter(won)[column][0] == contacts.filter(~won)[column][0]


def test_import_output_validates_clean(imported, olist_src):
    result, validation = imported
    assert validation.ok
    assert all(r["rejected"] == 0 for r in validation.summary.iter_rows(named=True))
    assert validation.tables["contacts"].height == KEPT_LEADS
    # The lead whose deal was won before its first contact is in the import's rejects, not lost.
    rejects = pl.read_csv(result.out_dir / REJECTS_FILE)
    deals = pl.read_csv(olist_src / DEALS_FILE, infer_schema=False)
    leads = pl.read_csv(olist_src / LEADS_FILE, infer_schema=False)
    before = (
        leads.join(deals, on="mql_id")
        .filter(
            pl.col("won_date").str.to_datetime("%Y-%m-%d %H:%M:%S")
            < pl.col("first_contact_date").str.to_datetime("%Y-%m-%d")
        )["mql_id"]
        .to_list()
    )
    assert (
        before == rejects.filter(pl.col("_rule") == "deal_before_first_contact")["mql_id"].to_list()
    )


def test_labels_kpis_and_features(imported, olist_src, deals):
    _, validation = imported
    contacts, orders = validation.tables["contacts"], validation.tables["orders"]
    customers = validation.tables["customers"]
    labeled = label_contacts(contacts, orders, horizon_days=HORIZON)
    # Independently: leads whose deal closed within 90 days of the first contact.
    leads = pl.read_csv(olist_src / LEADS_FILE, infer_schema=False).filter(
        pl.col("first_contact_date") >= FIRST_DEAL
    )
    expected = (
        leads.join(deals, on="mql_id")
        .with_columns(
            pl.col("first_contact_date").str.to_datetime("%Y-%m-%d"),
            pl.col("won_date").str.to_datetime("%Y-%m-%d %H:%M:%S"),
        )
        .filter(
            (pl.col("won_date") >= pl.col("first_contact_date"))
            & (pl.col("won_date") <= pl.col("first_contact_date") + timedelta(days=HORIZON))
        )
        .height
    )
    assert labeled["converted"].sum() == expected
    assert 0.08 < labeled["converted"].mean() < 0.13

    overall = kpi_table(labeled)
    assert overall["contacts"].item() == KEPT_LEADS
    assert overall["converted_contacts"].item() == expected
    by_channel = kpi_table(labeled, by="channel")
    assert by_channel["contacts"].sum() == KEPT_LEADS

    rates = compute_rates(labeled, horizon_days=HORIZON)
    # The batch job's compact global step gives every lead the rates the tables give it.
    assert_frame_equal(
        contact_rates(contacts, orders, HORIZON),
        join_rates(contacts, rates, ("agent", "intent", "channel")).select(RATE_COLUMNS),
        check_exact=True,
    )
    arrival = build_features(contacts, orders, customers, rates, "arrival", horizon_days=HORIZON)
    assert arrival.height == KEPT_LEADS
    assert arrival.columns == ["contact_id", "customer_id", "started_at", *feature_names("arrival")]
    # A lead's own deal comes after its first contact: no lead has order history at arrival.
    assert arrival["orders_lifetime"].sum() == 0
    # Rates are point in time: the first leads (first 90 days) have no settled outcome yet.
    early = arrival.filter(
        pl.col("started_at") < pl.col("started_at").min() + timedelta(days=HORIZON)
    )
    assert early["channel_conversion_rate"].null_count() == early.height
    late = arrival.filter(pl.col("started_at") > pl.col("started_at").min() + timedelta(days=120))
    assert late["channel_conversion_rate"].null_count() == 0
    # Without any deal at all, arrival features other than the rates are identical: deals never
    # reach a lead's features except through settled, earlier outcomes.
    without_deals = build_features(
        contacts, orders.clear(), customers, None, "arrival", horizon_days=HORIZON
    )
    rate_free = [c for c in arrival.columns if not c.endswith("_conversion_rate")]
    assert arrival.select(rate_free).equals(without_deals.select(rate_free))


def test_cli_import_and_features(olist_src, tmp_path, capsys, monkeypatch):
    from features import pipeline, spill
    from features.rates import RateTables

    out = tmp_path / "olist"
    assert main(["import", "olist", str(olist_src), "--out", str(out)]) == 0
    features_dir = tmp_path / "features"
    # Chunks of ~400 leads, rate groups of ~1,000: the real data through many spilled chunks.
    monkeypatch.setattr(pipeline, "SINK_CHUNK_ROWS", 400)
    monkeypatch.setattr(spill, "GROUP_CONTACTS", 1_000)
    code = main(
        [
            "features",
            str(out),
            "--out",
            str(features_dir),
            "--moment",
            "arrival",
            "--horizon-days",
            "90",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "left out 1,828 lead(s)" in printed and "30-day horizon" in printed
    frame = pl.read_parquet(features_dir / "features_arrival.parquet")
    assert frame.height == KEPT_LEADS
    assert (features_dir / "feature_set.json").is_file()
    assert "spill: 16 customer-hash chunks" in printed
    # Exactly the in-memory job: the rate tables of compute_rates, joined; the same rows in order.
    tables = load_and_validate(out).tables
    contacts, orders = tables["contacts"], tables["orders"]
    rates = compute_rates(label_contacts(contacts, orders, horizon_days=90), horizon_days=90)
    expected = build_features(
        contacts, orders, tables["customers"], rates, "arrival", horizon_days=90
    )
    assert_frame_equal(frame, expected, check_exact=True)
    written = RateTables.read(features_dir / "rates")
    for name, table in rates.tables.items():
        assert_frame_equal(written.tables[name], table, check_exact=True)
    assert_frame_equal(written.global_rate, rates.global_rate, check_exact=True)
