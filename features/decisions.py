"""The two decisions an uplift model is learnt for: send a follow-up, offer a callback.

One definition per decision, used by training (batch, Polars expressions on the prepared frame)
and serving (online, on the contact of a request), so both agree on which contacts a decision
exists for, which column records it, which features a model of it may read, and which column
of the exploration log says the decision was taken by a fair coin.

- **follow-up**: taken by the agent who served the contact (bots always send a transcript, a
  missed contact always gets a "sorry we missed you"). The model reads every after-contact
  feature but the decision itself.
- **callback offer**: taken while an inbound phone contact waits for an agent, so the model reads
  only what is known then: the arrival features and the wait. Abandonment, handling, transfers,
  resolution and the agent all come after the offer and would leak its effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Decision:
    name: str  # the uplift task's name: cto-<name> in the registry
    treatment: str  # the contact column (and feature) that records the decision
    randomised: str  # the exploration log's column: True where a fair coin decided
    truth_column: str  # the simulator's true per-contact effect (truth.parquet)
    moment_features: str  # "after_contact" or "arrival"
    description: str
    extra_features: tuple[str, ...] = ()  # after-contact features added to arrival ones

    @property
    def excluded_features(self) -> tuple[str, ...]:
        """The decision itself: a model of its effect must not read it as a feature."""
        return (self.treatment,)

    def applies(self, contact: Mapping[str, Any]) -> bool:
        """Online form: the decision exists for this contact."""
        if self.name == FOLLOW_UP.name:
            return contact.get("handled_by") == "agent" and not contact.get("abandoned")
        return (
            contact.get("channel") == "phone"
            and contact.get("direction", "inbound") == "inbound"
            and contact.get("handled_by") != "bot"
        )

    def applies_expr(self) -> pl.Expr:
        """Batch form of :meth:`applies` on the prepared frame (feature columns)."""
        if self.name == FOLLOW_UP.name:
            return (pl.col("handled_by").cast(pl.String) == "agent") & (
                pl.col("abandoned").fill_null(0) == 0
            )
        return (
            (pl.col("channel").cast(pl.String) == "phone")
            & (pl.col("direction").cast(pl.String).fill_null("inbound") == "inbound")
            & (pl.col("handled_by").cast(pl.String).fill_null("agent") != "bot")
        )

    def feature_names(self) -> list[str]:
        from features.registry import feature_names

        names = feature_names(self.moment_features) + [
            f for f in self.extra_features if f not in feature_names(self.moment_features)
        ]
        return [n for n in names if n not in self.excluded_features]


FOLLOW_UP = Decision(
    name="follow-up-uplift",
    treatment="follow_up_sent",
    randomised="follow_up_randomised",
    truth_column="effect_of_follow_up",
    moment_features="after_contact",
    description="change in P(order within the horizon) if a follow-up is sent after this contact "
    "rather than none; for contacts an agent served",
)
CALLBACK = Decision(
    name="callback-uplift",
    treatment="callback_offered",
    randomised="callback_randomised",
    truth_column="effect_of_callback_offer",
    moment_features="arrival",
    description="change in P(order within the horizon) if a callback is offered while the "
    "customer waits rather than none; for inbound phone contacts queued for an agent",
    extra_features=("wait_seconds",),
)
DECISIONS = (FOLLOW_UP, CALLBACK)
