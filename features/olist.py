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
  kept as extra columns.
- A closed deal is an order of its lead: ``order_id`` is the deal's ``seller_id``, ``ordered_at`` the
  ``won_date`` (taken as UTC), ``amount`` the ``declared_monthly_revenue`` (0 when missing: the
  source leaves most of it empty or 0, so amounts are a weak signal), ``contact_id`` the lead.
- Leakage: every deal column (sales reps ``sdr_id``/``sr_id``, business segment, lead type,
  behaviour profile, catalogue size, revenue...) exists only for won leads; none of them goes into
  a contact or customer row. The SDR would be the natural ``agent_id``, but it is only known for
  won leads, so it would give the label away.
- One deal was won 2 days *before* its lead's first contact. Decision: reject, not repair. The
  import writes it as it is and validation rejects that lead (its customer row breaks rule
  ``time_order``: first seen after its first order; its contact and deal then fail ``reference``):
  3 rows, counted and reported by ``cto validate``, never silently dropped, and never turned into
  an order "before" the lead, which would teach the model that a won seller was already a buyer.
- Labels: leads take weeks to close (median 14 days, up to over a year), so use a longer horizon,
  e.g. ``CTO_HORIZON_DAYS=90`` / ``--horizon-days 90``; late leads are right-censored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OlistImport:
    """What the import wrote and counted."""

    out_dir: Path
    contacts: int
    orders: int
    customers: int
    checksums_match: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "out_dir": str(self.out_dir),
            "contacts": self.contacts,
            "orders": self.orders,
            "customers": self.customers,
            "checksums_match": self.checksums_match,
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(src: Path, name: str, required: tuple[str, ...]) -> pl.DataFrame:
    path = src / name
    if not path.is_file():
        raise CTOError(f"{src}: no {name} (expected the Olist marketing funnel CSV files)")
    frame = pl.read_csv(path, infer_schema=False)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CTOError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def olist_tables(src_dir: Path | str) -> dict[str, pl.DataFrame]:
    """The Olist leads and deals as contract tables (contacts, orders, customers)."""
    src = Path(src_dir)
    leads = _read(src, LEADS_FILE, LEAD_COLUMNS)
    deals = _read(src, DEALS_FILE, ("mql_id", "seller_id", "won_date", "declared_monthly_revenue"))
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
    }


def import_olist(src_dir: Path | str, out_dir: Path | str) -> OlistImport:
    """Write the Olist funnel as contract tables (Parquet) plus ``import.json`` into ``out_dir``."""
    src, out = Path(src_dir), Path(out_dir)
    tables = olist_tables(src)
    checksums = {name: _sha256(src / name) for name in KNOWN_SHA256}
    matches = checksums == KNOWN_SHA256
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(out / f"{name}.parquet")
    result = OlistImport(
        out_dir=out,
        contacts=tables["contacts"].height,
        orders=tables["orders"].height,
        customers=tables["customers"].height,
        checksums_match=matches,
    )
    meta = result.as_dict() | {
        "source": str(src),
        "licence": "CC BY-NC-SA 4.0: tests and examples only, never ship",
        "sha256": checksums,
        "origin_to_channel": ORIGIN_CHANNEL,
        "recommended_horizon_days": 90,
    }
    (out / "import.json").write_text(json.dumps(meta, indent=2))
    return result
