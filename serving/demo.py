"""Call a running scoring service over HTTP: what `cto demo` does after starting it.

from serving.process import start_server
from serving.demo import run_demo_requests, format_answer

server = start_server({"CTO_TRACKING_URI": "sqlite:////abs/mlflow.db"}, Path("serve.log"))
try:
    for answer in run_demo_requests(server.base_url, contacts, history=(contacts_df, orders_df)):
        print(format_answer(answer))
finally:
    server.stop()
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import polars as pl


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def contact_payload(contact: dict[str, Any], moment: str) -> dict[str, Any]:
    """A contract row as the API's contact (drop-off reason is never an input)."""
    keep = dict(contact)
    keep.pop("dropoff_reason", None)
    if moment == "arrival":
        for name in ("handled_by", "agent_id", "wait_seconds", "handle_seconds", "transfers", "abandoned",
                     "resolved", "callback_offered", "follow_up_sent"):  # fmt: skip
            keep.pop(name, None)
    return _jsonable(keep)


def history_payload(
    customer_id: str, before: datetime, contacts: pl.DataFrame, orders: pl.DataFrame
) -> dict[str, Any]:
    """The customer's contacts and orders before ``before``, as the request's ``history``."""
    past_contacts = contacts.filter(
        (pl.col("customer_id") == customer_id) & (pl.col("started_at") < before)
    )
    past_orders = orders.filter(
        (pl.col("customer_id") == customer_id) & (pl.col("ordered_at") < before)
    )
    return {
        "contacts": [_jsonable(r) for r in past_contacts.to_dicts()],
        "orders": [_jsonable(r) for r in past_orders.to_dicts()],
    }


def run_demo_requests(
    base_url: str,
    contacts: Sequence[dict[str, Any]] | pl.DataFrame,
    *,
    history: tuple[pl.DataFrame, pl.DataFrame] | None = None,
    moment: str = "after_contact",
    token: str | None = None,
    top_k: int = 3,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """POST /score for each contact (contract rows); returns the JSON answers in order.

    With ``history=(contacts, orders)`` each request carries the customer's past events;
    without it the service reads them from its event store (POST /events).
    """
    rows = contacts.to_dicts() if isinstance(contacts, pl.DataFrame) else list(contacts)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answers = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
        for row in rows:
            payload: dict[str, Any] = {
                "contact": contact_payload(row, moment),
                "moment": moment,
                "top_k": top_k,
            }
            if history is not None:
                payload["history"] = history_payload(
                    row["customer_id"], row["started_at"], *history
                )
            response = client.post("/score", json=payload)
            response.raise_for_status()
            answers.append(response.json())
    return answers


def format_answer(answer: dict[str, Any]) -> str:
    """A few lines a person reads: probability, tier, action, top drivers."""
    lines = [
        f"{answer['contact_id']} ({answer['customer_id']}): "
        f"{answer['conversion_probability']:.0%} to order, {answer['priority']['tier']}"
    ]
    if answer.get("next_action"):
        lines.append(
            f"  next: {answer['next_action']['action']} - {answer['next_action']['reason']}"
        )
    uplifts = [
        f"{name} {answer[key]:+.3f}"
        for key, name in (("follow_up_uplift", "follow-up"), ("callback_uplift", "callback"))
        if answer.get(key) is not None
    ]
    if uplifts:
        lines.append(f"  uplift in P(order): {', '.join(uplifts)}")
    if answer.get("dropoff_reasons"):
        top = answer["dropoff_reasons"][0]
        lines.append(f"  likeliest drop-off reason: {top['reason']} ({top['probability']:.0%})")
    for driver in answer.get("drivers") or []:
        lines.append(f"  - {driver['text']}")
    return "\n".join(lines)
