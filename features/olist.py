"""Map the Olist marketing funnel (leads and closed deals) into the data contract.

Source: "Marketing Funnel by Olist" (Kaggle, CC BY-NC-SA 4.0): use it for tests and examples
only, never ship it in the project. ``cto import olist SRC_DIR --out DIR`` writes
``contacts.parquet``, ``orders.parquet``, ``customers.parquet`` and ``import.json`` into DIR; then
``cto validate DIR`` / ``cto features DIR`` work as on any other data.

The mapping, decided once and documented here and in docs/features.md:

- A lead (``mql_id``) is a customer and its first contact is one contact: ``contact_id`` and
  ``customer_id`` are the ``mql_id``; ``started_at`` is ``first_contact_date`` at 00:00 UTC (the
  source has dates only); ``channel`` from ``origin`` (:data:`ORIGIN_CHANNEL`: search, display and
  direct traffic reach Olist through its web forms; an unknown or empty origin is ``other``);
  ``direction`` inbound (the seller asked to be contacted); ``intent`` product_inquiry;
  ``handled_by`` agent.
- After-contact fields are not in the source: ``wait_seconds``/``handle_seconds``/``transfers`` are
  0, the booleans False, ``agent_id`` and ``dropoff_reason`` null. They carry no information, so
  only arrival-moment features are meaningful on this data. ``landing_page_id`` and ``origin`` are
  kept as extra columns and declared in ``import.json`` as ``arrival_columns``: known when the
  lead arrives, they are model features next to the registry's (``cto train`` picks them up).
  They carry most of the signal: the contract's ``channel`` merges the four web origins.
- A closed deal is an order of its lead: ``order_id`` is the deal's ``seller_id``, ``ordered_at`` the
  ``won_date`` (taken as UTC), ``amount`` the ``declared_monthly_revenue`` (0 when missing: the
  source leaves most of it empty or 0, so amounts are a weak signal), ``contact_id`` the lead.
- Leakage: every deal column (sales reps ``sdr_id``/``sr_id``, business segment, lead type,
  behaviour profile, catalogue size, revenue...) exists only for won leads; none of them goes into
  a contact or customer row. The SDR would be the natural ``agent_id``, but it is only known for
  won leads, so it would give the label away.
- One deal was won 2 days *before* its lead's first contact. Decision: reject, not repair. The
  contract would reject that lead (its customer row breaks rule ``time_order``: first seen after
  its first order; its contact and deal then fail ``reference``), so the import leaves the lead and
  its deal out, says so, and keeps them with their reason in ``import_rejects.csv`` (rule
  ``deal_before_first_contact``): the written tables validate clean, nothing is dropped silently,
  and no order "before" the lead teaches a model that a won seller was already a buyer.
- Labels: leads take weeks to close (median 14 days; 66% within 30 days, 82% within 90), so use
  a longer horizon than the contact centre's 7 days. A time split needs the horizon twice (no
  training or validation label may be learnt after its cut), and the recorded span is under six
  months, so the import recommends 30 days: ``import.json`` records
  ``recommended_horizon_days``, which every command that labels
  (train, score, report, summary, features) takes as its default for this directory and says so;
  ``--horizon-days`` overrides it. Late leads are right-censored.
- The deals file starts on 2017-12-05, six months after the first lead: a lead contacted before
  it could have closed unrecorded, and the leads of those months are a thinner sample (240-420 a
  month against 1,000-1,350 after). Their outcomes cannot be trusted, so the import leaves out
  every lead first contacted before the first recorded deal (with its deal, if any), says how
  many, and keeps them in ``import_rejects.csv`` (rule ``before_deal_records``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from features.errors import CTOError
from features.schema import CONTACTS, CUSTOMERS, ORDERS

LEADS_FILE = "olist_marketing_qualified_leads_dataset.csv"
DEALS_FILE = "olist_closed_deals_dataset.csv"
# The files this mapping was written for (from the data set's README).
KNOWN_SHA256 = {
    LEADS_FILE: "5537753b7549ce4068e52e2402c29f2773c5375fc0575520ae8f3f301f666573",
    DEALS_FILE: "1433f402d8fff00ca167579de641d9525f6e846368958c166f699ef1b0c31f3d",
}
ORIGIN_CHANNEL: dict[str, str] = {
    "paid_search": "web_form",
    "organic_search": "web_form",
    "display": "web_form",
    "direct_traffic": "web_form",
    "email": "email",
    "social": "social",
    "referral": "other",
    "other_publicities": "other",
    "other": "other",
    "unknown": "other",
}
LEAD_COLUMNS = ("mql_id", "first_contact_date", "landing_page_id", "origin")
EXTRA_CONTACT_COLUMNS = ("landing_page_id", "origin")
# Leads close in weeks (median 14 days, some after a year): a 7-day horizon calls most deals lost;
# 90 days would leave no room for a time split in the ~6 months recorded (module docstring).
RECOMMENDED_HORIZON_DAYS = 30


@dataclass(frozen=True)
class OlistImport:
    """What the import wrote and counted."""

    out_dir: Path
    contacts: int
    orders: int
    customers: int
    checksums_match: bool
    rejected: dict[str, int] = field(default_factory=dict)  # rule -> leads left out
    rejected_deals: int = 0
    first_order_at: str | None = None

    @property
    def rejected_leads(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "contacts": self.contacts,
            "orders": self.orders,
            "customers": self.customers,
            "checksums_match": self.checksums_match,
            "rejected_leads": self.rejected,
            "rejected_deals": self.rejected_deals,
            "first_order_at": self.first_order_at,
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(src: Path, name: str, required: tuple[str, ...]) -> pl.DataFrame:
    path = src / name
    if not path.is_file():
        raise CTOError(f"{src}: no {name} (expected the Olist marketing funnel CSV files)")
    from features.validate import read_table

    frame = read_table(path)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CTOError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


REJECTS_FILE = "import_rejects.csv"
DEAL_BEFORE_CONTACT = "deal_before_first_contact"


def deals_before_first_contact(leads: pl.DataFrame, deals: pl.DataFrame) -> pl.DataFrame:
    """Leads whose deal was won before their first contact: mql_id, _rule, _message."""
    return (
        leads.select("mql_id", "first_contact_date")
        .join(deals.select("mql_id", "won_date"), on="mql_id")
        .filter(
            pl.col("won_date").str.to_datetime("%Y-%m-%d %H:%M:%S")
            < pl.col("first_contact_date").str.to_datetime("%Y-%m-%d")
        )
        .select(
            "mql_id",
            pl.lit(DEAL_BEFORE_CONTACT).alias("_rule"),
            pl.format(
                "deal won {} before the lead's first contact {}: lead and deal left out",
                "won_date",
                "first_contact_date",
            ).alias("_message"),
        )
    )


BEFORE_DEAL_RECORDS = "before_deal_records"


def leads_before_deal_records(leads: pl.DataFrame, deals: pl.DataFrame) -> pl.DataFrame:
    """Leads first contacted before the first recorded deal: their outcome is unknown."""
    first_deal = deals.select(
        pl.col("won_date").str.to_datetime("%Y-%m-%d %H:%M:%S").min().dt.date()
    ).item()
    if first_deal is None:
        return pl.DataFrame(schema={"mql_id": pl.String, "_rule": pl.String, "_message": pl.String})
    return leads.filter(pl.col("first_contact_date").str.to_date("%Y-%m-%d") < first_deal).select(
        "mql_id",
        pl.lit(BEFORE_DEAL_RECORDS).alias("_rule"),
        pl.format(
            "first contact {} is before the first recorded deal ({}): outcome unknown, left out",
            "first_contact_date",
            pl.lit(str(first_deal)),
        ).alias("_message"),
    )


def olist_tables(src_dir: Path | str) -> dict[str, pl.DataFrame]:
    """The Olist leads and deals as contract tables (contacts, orders, customers).

    A ``rejects`` frame (mql_id, _rule, _message) lists the leads left out with their deals.
    """
    src = Path(src_dir)
    leads = _read(src, LEADS_FILE, LEAD_COLUMNS)
    deals = _read(src, DEALS_FILE, ("mql_id", "seller_id", "won_date", "declared_monthly_revenue"))
    rejects = pl.concat(
        [deals_before_first_contact(leads, deals), leads_before_deal_records(leads, deals)]
    ).unique("mql_id", keep="first", maintain_order=True)
    rejects = rejects.with_columns(
        pl.col("mql_id").is_in(deals["mql_id"].implode()).alias("had_deal")
    ).select("mql_id", "had_deal", "_rule", "_message")
    kept = ~pl.col("mql_id").is_in(rejects["mql_id"].implode())
    leads, deals = leads.filter(kept), deals.filter(kept)
    started = (
        pl.col("first_contact_date")
        .str.to_date("%Y-%m-%d")
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )
    origin = pl.col("origin").str.strip_chars().replace("", None)
    contacts = leads.select(
        pl.col("mql_id").alias("contact_id"),
        pl.col("mql_id").alias("customer_id"),
        started.alias("started_at"),
        origin.replace_strict(ORIGIN_CHANNEL, default="other")
        .cast(CONTACTS.column("channel").dtype)
        .alias("channel"),
        pl.lit("inbound").cast(CONTACTS.column("direction").dtype).alias("direction"),
        pl.lit("product_inquiry").cast(CONTACTS.column("intent").dtype).alias("intent"),
        pl.lit("agent").cast(CONTACTS.column("handled_by").dtype).alias("handled_by"),
        pl.lit(None, pl.String).alias("agent_id"),
        pl.lit(0.0).alias("wait_seconds"),
        pl.lit(0.0).alias("handle_seconds"),
        pl.lit(0, pl.Int32).alias("transfers"),
        pl.lit(False).alias("abandoned"),
        pl.lit(False).alias("resolved"),
        pl.lit(False).alias("callback_offered"),
        pl.lit(False).alias("follow_up_sent"),
        pl.lit(None).cast(CONTACTS.column("dropoff_reason").dtype).alias("dropoff_reason"),
        pl.col("landing_page_id"),
        origin.fill_null("unknown").alias("origin"),
    )
    orders = deals.select(
        pl.col("seller_id").alias("order_id"),
        pl.col("mql_id").alias("customer_id"),
        pl.col("won_date")
        .str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC")
        .alias("ordered_at"),
        pl.col("declared_monthly_revenue")
        .cast(pl.Float64, strict=False)
        .fill_null(0.0)
        .alias("amount"),
        pl.col("mql_id").alias("contact_id"),
    )
    customers = contacts.select(
        "customer_id",
        pl.lit(None).cast(CUSTOMERS.column("segment").dtype).alias("segment"),
        pl.lit(None, pl.String).alias("region"),
        pl.col("started_at").alias("first_seen_at"),
    )
    return {
        "contacts": contacts.select(*CONTACTS.names, *EXTRA_CONTACT_COLUMNS),
        "orders": orders.select(ORDERS.names),
        "customers": customers.select(CUSTOMERS.names),
        "rejects": rejects,
    }


def import_olist(src_dir: Path | str, out_dir: Path | str) -> OlistImport:
    """Write the Olist funnel as contract tables (Parquet) plus ``import.json`` into ``out_dir``."""
    src, out = Path(src_dir), Path(out_dir)
    tables = olist_tables(src)
    rejects = tables.pop("rejects")
    checksums = {name: _sha256(src / name) for name in KNOWN_SHA256}
    matches = checksums == KNOWN_SHA256
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(out / f"{name}.parquet")
    rejects_path = out / REJECTS_FILE
    if rejects.height:
        rejects.write_csv(rejects_path)
    elif rejects_path.exists():
        rejects_path.unlink()
    # The first deal of the source (its lead may be one left out): where the deal records begin.
    first_order = (
        _read(src, DEALS_FILE, ("won_date",))
        .select(pl.col("won_date").str.to_datetime("%Y-%m-%d %H:%M:%S", time_zone="UTC").min())
        .item()
    )
    result = OlistImport(
        out_dir=out,
        contacts=tables["contacts"].height,
        orders=tables["orders"].height,
        customers=tables["customers"].height,
        checksums_match=matches,
        rejected=dict(rejects.group_by("_rule").len().sort("_rule").iter_rows()),
        rejected_deals=int(rejects["had_deal"].sum()),
        first_order_at=first_order.isoformat() if first_order is not None else None,
    )
    meta = result.as_dict() | {
        "source": str(src),
        "licence": "CC BY-NC-SA 4.0: tests and examples only, never ship",
        "sha256": checksums,
        "origin_to_channel": ORIGIN_CHANNEL,
        "source_kind": "olist",
        "arrival_columns": list(EXTRA_CONTACT_COLUMNS),
        "recommended_horizon_days": RECOMMENDED_HORIZON_DAYS,
    }
    (out / "import.json").write_text(json.dumps(meta, indent=2))
    return result
