"""Fair agent comparisons recover the simulator's planted agent skills, better than raw shares.

The simulator gives every agent a hidden skill (``truth.agent_skill``) that raises their contacts'
chance to order. Over the last 12 weeks with known outcomes we rank agents by raw share and by the
report's shrunk observed/expected ratio (expected from the arrival champion, agent features
neutralised) and compare both rankings with the planted skills (Spearman rank correlation).

The simulator routes contacts to agents at random, so raw shares are fair there and the ratio can
only match them. Real centres route by queue: a sales queue converts more than a service queue
whatever the agent does. The second case keeps, for half of the agents, only their sales inquiries
and, for the other half (chosen without regard to skill), only their other requests: raw shares now
rank agents by queue, and the ratio must still find the skills.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from scipy.stats import spearmanr

from features.pipeline import build_features
from features.rates import compute_rates
from reports import fairness
from reports.driver import _history_for, load_report_data
from reports.kpis import Period
from reports.models import load_champions
from reports.whatif import INQUIRY_INTENTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent_outcomes(sim_dir, mlflow_settings, trained) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per human-handled contact: agent, intent, outcome and the neutral expected chance."""
    data = load_report_data(sim_dir, mlflow_settings)
    end = data.observed_until - timedelta(days=mlflow_settings.horizon_days)
    period = Period(end - timedelta(weeks=12), end)
    model = load_champions(mlflow_settings).get("conversion-arrival")
    contacts, orders = _history_for(data, period)
    features = build_features(
        contacts,
        orders,
        data.customers,
        compute_rates(data.labeled, mlflow_settings.horizon_days),
        moment="arrival",
        journey_gap_days=mlflow_settings.journey_gap_days,
        horizon_days=mlflow_settings.horizon_days,
    ).filter(period.contains())
    rows = data.labeled.filter(
        period.contains()
        & pl.col("agent_id").is_not_null()
        & (pl.col("label_known_at") <= data.observed_until)
    ).select("contact_id", "agent_id", pl.col("intent").cast(pl.String), "converted")
    scored = features.join(rows.select("contact_id"), on="contact_id")
    expected = fairness.expected_probability(
        model, scored, fairness.identity_features(model, "agent_id")
    )
    outcomes = rows.join(
        scored.select("contact_id").with_columns(pl.Series("expected", expected)), on="contact_id"
    )
    truth = pl.read_parquet(sim_dir / "truth.parquet").select("contact_id", "agent_skill")
    skills = (
        rows.join(truth, on="contact_id")
        .group_by("agent_id")
        .agg(pl.col("agent_skill").first().alias("skill"))
    )
    return outcomes, skills


def _rank_agreement(outcomes: pl.DataFrame, skills: pl.DataFrame) -> tuple[float, float]:
    """(raw share vs skill, shrunk observed/expected vs skill) Spearman correlations."""
    comparison = fairness.observed_vs_expected(outcomes, "agent_id")
    fair = comparison.table.join(skills, left_on="group", right_on="agent_id")
    raw = (
        outcomes.group_by("agent_id")
        .agg(pl.col("converted").mean().alias("share"))
        .join(skills, on="agent_id")
    )
    assert fair.height == raw.height >= 50
    return (
        float(spearmanr(raw["share"], raw["skill"]).statistic),
        float(spearmanr(fair["ratio"], fair["skill"]).statistic),
    )


def test_fair_ratio_recovers_planted_skills_when_routing_is_random(agent_outcomes):
    outcomes, skills = agent_outcomes
    raw, fair = _rank_agreement(outcomes, skills)
    print(f"routed at random: raw share rho={raw:.3f}, shrunk observed/expected rho={fair:.3f}")
    # Measured: raw 0.79, fair 0.80 (seed 7, 40,000 contacts).
    assert fair >= 0.7
    assert fair >= raw - 0.03


def test_fair_ratio_recovers_planted_skills_when_agents_serve_different_queues(agent_outcomes):
    outcomes, skills = agent_outcomes
    sales_queue = pl.col("agent_id").str.slice(2).cast(pl.Int32) % 2 == 0
    queued = outcomes.filter(sales_queue == pl.col("intent").is_in(list(INQUIRY_INTENTS)))
    raw, fair = _rank_agreement(queued, skills)
    print(f"queues: raw share rho={raw:.3f}, shrunk observed/expected rho={fair:.3f}")
    # Measured: raw 0.62, fair 0.76 (seed 7, 40,000 contacts).
    assert fair >= 0.68
    assert fair >= raw + 0.08
