"""Fair comparisons: each agent's (or channel's) observed orders against the orders expected of them.

A raw share ranks agents partly by the requests they are routed: a service queue converts less than
a sales queue whatever the agent does. The fair question is "did this agent's contacts order more
than the same contacts would have with an average agent?". The expected orders come from the
champion conversion model scored at the contact's *arrival* (the customer, their history, the
request, the channel, the time: nothing the agent did), with every feature that encodes the group
itself neutralised: replaced by values drawn from the whole population and averaged over the draws,
so the model cannot credit or blame a group for being itself. Expected orders are scaled so that all
compared contacts together expect exactly what they observed: a ratio of 1 means "as the average
agent would have done with these contacts this period".

The ratio observed / expected is shrunk towards 1 by empirical Bayes (:func:`reports.stats.shrink_ratios`):
an agent with 40 contacts and 9 orders against 5 expected is not yet "80% better".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from reports import stats
from reports.models import Champion

# Features that encode who or what a group is, per grouping column. Whichever of them the model uses
# are neutralised for that comparison.
IDENTITY_FEATURES: dict[str, tuple[str, ...]] = {
    "agent_id": ("agent_conversion_rate",),
    "channel": ("channel", "channel_conversion_rate"),
}
NEUTRAL_DRAWS = 8
NEUTRAL_SEED = 5


def identity_features(champion: Champion, by: str) -> list[str]:
    """The model features that encode the ``by`` group (empty when the model has none)."""
    return [f for f in IDENTITY_FEATURES.get(by, ()) if f in champion.feature_names]


def expected_probability(
    champion: Champion,
    features: pl.DataFrame,
    neutralise: list[str],
    draws: int = NEUTRAL_DRAWS,
    seed: int = NEUTRAL_SEED,
) -> np.ndarray:
    """Each contact's chance to order with the ``neutralise`` features set to population values.

    Each draw gives every contact the identity values of a randomly chosen contact of ``features``
    (jointly, so a channel keeps its own rate); the chances are averaged over the draws.
    """
    if not neutralise:
        return champion.probability(champion.matrix(features))
    rng = np.random.default_rng(seed)
    population = features.select(neutralise)
    total = np.zeros(features.height)
    for _ in range(draws):
        picked = population[rng.integers(0, population.height, features.height)]
        scenario = features.with_columns(picked.get_columns())
        total += champion.probability(champion.matrix(scenario))
    return total / draws


@dataclass(frozen=True)
class Comparison:
    table: pl.DataFrame  # one row per group, see observed_vs_expected
    prior_strength: float
    scale: float  # expected orders were multiplied by this to sum to the observed


def observed_vs_expected(
    outcomes: pl.DataFrame, by: str, min_expected: float = 1.0
) -> Comparison | None:
    """Per ``by`` group: contacts, observed and expected orders, raw and shrunk ratio, interval.

    ``outcomes`` has one row per contact with ``by``, ``converted`` and ``expected`` (the model's
    neutral chance). Groups expecting fewer than ``min_expected`` orders are left out. Columns:
    ``group, contacts, observed, expected, raw_ratio, ratio, ratio_low, ratio_high, verdict``
    (``above``/``below`` where the 95% credible interval excludes 1), sorted by ``ratio``.
    """
    grouped = (
        outcomes.filter(pl.col(by).is_not_null())
        .group_by(pl.col(by).cast(pl.String).alias("group"))
        .agg(
            pl.len().alias("contacts"),
            pl.col("converted").cast(pl.Int64).sum().alias("observed"),
            pl.col("expected").sum().alias("expected"),
        )
    )
    total_expected = float(grouped["expected"].sum())
    if grouped.height < 2 or total_expected <= 0:
        return None
    scale = float(grouped["observed"].sum()) / total_expected
    grouped = grouped.with_columns(pl.col("expected") * scale).filter(
        pl.col("expected") >= min_expected
    )
    if grouped.height < 2:
        return None
    shrunk = stats.shrink_ratios(grouped["observed"].to_numpy(), grouped["expected"].to_numpy())
    table = grouped.with_columns(
        pl.Series("raw_ratio", shrunk.raw),
        pl.Series("ratio", shrunk.shrunk),
        pl.Series("ratio_low", shrunk.low),
        pl.Series("ratio_high", shrunk.high),
        pl.Series("verdict", shrunk.verdict, pl.String),
    ).sort("ratio", "contacts", descending=[True, True])
    return Comparison(table, shrunk.prior_strength, scale)


def credible_sentence(table: pl.DataFrame, noun: str, plural: str) -> str:
    """Which groups differ credibly from expected, in words."""
    above = table.filter(pl.col("verdict") == "above")
    below = table.filter(pl.col("verdict") == "below")

    def names(frame: pl.DataFrame) -> str:
        parts = [
            f"{g.replace('_', ' ')} ({r:.2f}×)"
            for g, r in zip(frame["group"], frame["ratio"], strict=True)
        ]
        return ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")

    if above.height == 0 and below.height == 0:
        return (
            f"No {noun} differs credibly from what their contacts would be expected to bring: "
            f"the differences between {plural} are within what chance produces."
        )
    pieces = []
    if above.height:
        pieces.append(f"credibly more orders than expected: {names(above)}")
    if below.height:
        pieces.append(f"credibly fewer: {names(below)}")
    rest = table.height - above.height - below.height
    return (
        f"Of {table.height} {plural}, " + "; ".join(pieces) + f". The other {rest} are within "
        "what chance produces (their 95% interval includes 1)."
    )
