"""Policy simulator: what acting on the scores is worth, in orders, under the simulator's own laws.

Contacts come from :func:`features.simulate.simulate`. The phone / chat / other contacts that wait
for an agent go through :mod:`training.queue` (agents per channel and hour, service times = the
contacts' handling times, impatient customers). Their waits follow from the queue order and the
staffing; abandonment from the patience that reproduces the simulator's abandonment law; each
contact's own chance of an order from the simulator's documented laws under the counterfactual
wait, abandonment and follow-up (``long_wait``, ``abandoned`` and ``no_follow_up`` effects of
``features.simulate.EFFECTS``, everything else about the contact as simulated). Common random
numbers: every policy sees the same arrivals, service times, patiences and outcome coins, so a
difference between policies is the policy's, not the dice's, and a policy equal to FIFO gives
exactly FIFO's orders.

**Calibration.** A simulated wait has two parts here: a routing delay every caller goes through
(menus, identification; lognormal, a share of the simulator's median) and the queue delay.
Staffing per channel and hour follows the square-root rule ``agents = a + beta sqrt(a)`` on the
offered load ``a`` (arrivals per hour of day in that week x mean service time). The routing share
and ``beta`` (one per channel and staffing regime) are fitted so that FIFO reproduces the
simulator's served-wait median, 90th percentile and abandonment rate (tested within 10%).

**Scope.** Orders are the contacts' own conversions (``p_contact`` of the truth table, within 7
days); the journey feedback (a bad experience brings fewer customers back) is not replayed, and
each contact keeps its simulated agent, transfers and resolution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from features.simulate import EFFECTS, HANDLE_MEDIAN_SECONDS, ORDER_MEDIAN_AMOUNT, simulate
from training.queue import HOUR, patience_from_uniform, serve_pool, with_callback

SYNC = ("phone", "chat", "other")
INQUIRY = ("product_inquiry", "pricing", "availability")
ROUTING_SHARES = (0.6, 0.75, 0.9)
ROUTING_SDS = (0.7, 1.0)
BOOTSTRAP_DRAWS = 1000
ARRIVAL_FEATURES = ["channel", "intent", "segment", "hour", "weekday", "journey_position"]
AFTER_FEATURES = [*ARRIVAL_FEATURES, "wait", "transfers", "resolved", "handle_seconds"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class World:
    """The queued contacts of one simulated run, sorted by arrival, with their random numbers."""

    frame: pl.DataFrame  # observable columns per contact (models read these)
    arrival: np.ndarray  # seconds from the first midnight
    channel: np.ndarray  # index into SYNC
    regime: np.ndarray  # 0 before the staffing change, 1 after
    day: np.ndarray
    service: np.ndarray
    patience: np.ndarray  # before any callback offer
    routing_z: np.ndarray  # standard normal of the routing delay
    callback_coin: np.ndarray
    convert_coin: np.ndarray
    base_logit: np.ndarray  # the contact's log-odds without long_wait and no_follow_up effects
    inquiry: np.ndarray
    follow_default: np.ndarray  # what the agent would do (the simulator's follow-up decision)
    explore_coin: np.ndarray
    explore_follow: np.ndarray
    sim_wait: np.ndarray
    sim_abandoned: np.ndarray
    order_value: np.ndarray
    hours: int
    staffing: dict[str, np.ndarray] = field(default_factory=dict)
    routing: dict[str, tuple[np.ndarray, float]] = field(
        default_factory=dict
    )  # medians per regime, sd


def build_world(n_contacts: int, seed: int, weeks: int) -> World:
    data = simulate(n_contacts=n_contacts, seed=seed, weeks=weeks)
    truth = data.truth.select(
        "contact_id", "p_contact", "effect_long_wait", "effect_no_follow_up", "journey_position"
    )
    q = (
        data.contacts.filter(
            pl.col("channel").cast(pl.String).is_in(SYNC)
            & (pl.col("handled_by") == "agent")
            & (pl.col("direction") == "inbound")
        )
        .join(truth, on="contact_id")
        .join(data.customers.select("customer_id", "segment"), on="customer_id")
        .sort("started_at", "contact_id")
    )
    day0 = q["started_at"].min().replace(hour=0, minute=0, second=0, microsecond=0)
    arrival = ((q["started_at"] - day0).dt.total_microseconds() / 1e6).to_numpy()
    rng = np.random.default_rng([seed, 14])
    n = q.height
    channel_name = q["channel"].cast(pl.String).to_numpy()
    channel = np.select([channel_name == c for c in SYNC], list(range(len(SYNC))))
    change = data.scenario["staffing_change_at"]
    change_s = (pl.Series([change]).str.to_datetime(time_zone="UTC")[0] - day0).total_seconds()
    sim_abandoned = q["abandoned"].to_numpy()
    handle = q["handle_seconds"].to_numpy()
    median = np.array([HANDLE_MEDIAN_SECONDS[c] for c in channel_name])
    drawn = median * np.exp(0.6 * rng.standard_normal(n))
    service = np.where(sim_abandoned | (handle <= 0), drawn, handle)
    inquiry = q["intent"].cast(pl.String).is_in(INQUIRY).to_numpy()
    followed = q["follow_up_sent"].to_numpy()
    served = ~sim_abandoned
    rate = np.where(inquiry, followed[served & inquiry].mean(), followed[served & ~inquiry].mean())
    follow_default = np.where(served, followed, rng.random(n) < rate)
    p = np.clip(q["p_contact"].to_numpy(), 1e-9, 1 - 1e-9)
    base = (
        np.log(p / (1 - p)) - q["effect_long_wait"].to_numpy() - q["effect_no_follow_up"].to_numpy()
    )
    frame = q.select(
        "contact_id",
        pl.col("channel").cast(pl.String),
        pl.col("intent").cast(pl.String),
        pl.col("segment").cast(pl.String),
        pl.col("started_at").dt.hour().alias("hour"),
        pl.col("started_at").dt.weekday().alias("weekday"),
        "journey_position",
        "transfers",
        pl.col("resolved").cast(pl.Int8),
        "handle_seconds",
    )
    return World(
        frame=frame,
        arrival=arrival,
        channel=channel,
        regime=(arrival >= change_s).astype(int),
        day=(arrival // 86_400).astype(int),
        service=service,
        patience=patience_from_uniform(rng.random(n)),
        routing_z=rng.standard_normal(n),
        callback_coin=rng.random(n),
        convert_coin=rng.random(n),
        base_logit=base,
        inquiry=inquiry,
        follow_default=follow_default,
        explore_coin=rng.random(n),
        explore_follow=rng.random(n) < 0.5,
        sim_wait=q["wait_seconds"].to_numpy(),
        sim_abandoned=sim_abandoned,
        order_value=q["segment"]
        .cast(pl.String)
        .replace_strict(ORDER_MEDIAN_AMOUNT, return_dtype=pl.Float64)
        .to_numpy(),
        hours=int(arrival.max() // HOUR) + 2,
    )


# --- staffing and calibration ---------------------------------------------------------------------


def offered_load(world: World, ch: int) -> np.ndarray:
    """Erlangs per hour: mean arrivals at that hour of the day in that week x mean service time."""
    m = world.channel == ch
    counts = np.bincount((world.arrival[m] // HOUR).astype(int), minlength=world.hours)
    hours = np.arange(world.hours)
    key = (hours // 168) * 24 + hours % 24
    sums = np.bincount(key, weights=counts)
    cells = np.bincount(key)
    rate = sums[key] / np.maximum(cells[key], 1)
    return rate * world.service[m].mean() / HOUR


def staffing_rule(load: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.maximum(1, np.round(load + beta * np.sqrt(load))).astype(int)


@dataclass
class QueueRun:
    wait: np.ndarray
    abandoned: np.ndarray
    callback: np.ndarray


def run_queue(
    world: World,
    priority: np.ndarray | None = None,
    callback_offer: np.ndarray | None = None,
    staffing: dict[str, np.ndarray] | None = None,
    routing: dict[str, tuple[np.ndarray, float]] | None = None,
) -> QueueRun:
    """Waits (routing + queue) and abandonment of every contact under one policy."""
    staffing = staffing or world.staffing
    routing = routing or world.routing
    priority = world.arrival if priority is None else priority
    if callback_offer is None:  # the simulator's practice: half of the phone callers, at random
        callback_offer = (world.channel == SYNC.index("phone")) & (world.callback_coin < 0.5)
    wait = np.zeros(len(world.arrival))
    abandoned = np.zeros(len(world.arrival), dtype=bool)
    for ch, name in enumerate(SYNC):
        m = world.channel == ch
        medians, sd = routing[name]
        delay = medians[world.regime[m]] * np.exp(sd * world.routing_z[m])
        patience = with_callback(world.patience[m], callback_offer[m]) - delay
        queue_wait, gone = serve_pool(
            world.arrival[m], world.service[m], patience, priority[m], staffing[name]
        )
        wait[m] = queue_wait + delay
        abandoned[m] = gone
    return QueueRun(wait, abandoned, callback_offer & (wait > 120.0))


def wait_summary(wait: np.ndarray, abandoned: np.ndarray) -> dict[str, float]:
    served = wait[~abandoned]
    return {
        "median_wait_s": float(np.median(served)),
        "p90_wait_s": float(np.percentile(served, 90)),
        "abandonment_rate": float(abandoned.mean()),
    }


def calibrate(world: World, iterations: int = 12, progress=None) -> dict[str, dict[str, float]]:
    """Fit the routing share and staffing beta per channel so FIFO matches the simulator's waits."""
    result: dict[str, dict[str, float]] = {}
    for ch, name in enumerate(SYNC):
        m = world.channel == ch
        sim_served = world.sim_wait[m & ~world.sim_abandoned]
        target = {
            "median_wait_s": float(np.median(sim_served)),
            "p90_wait_s": float(np.percentile(sim_served, 90)),
            "abandonment_rate": float(world.sim_abandoned[m].mean()),
        }
        load = offered_load(world, ch)
        regime_by_hour = np.zeros(world.hours, dtype=int)
        changed = world.arrival[m & (world.regime == 1)]
        if len(changed):
            regime_by_hour[int(changed.min() // HOUR) :] = 1
        sub = _subworld(world, m)
        best = None
        regime_median = np.array(
            [
                np.median(sub.sim_wait[(sub.regime == r) & ~sub.sim_abandoned])
                if (sub.regime == r).any()
                else 0.0
                for r in (0, 1)
            ]
        )
        for share, sd in [(a, b) for a in ROUTING_SHARES for b in ROUTING_SDS]:
            routing = {name: (share * regime_median, sd)}
            lo, hi = np.full(2, -1.5), np.full(2, 4.0)
            for _ in range(iterations):
                beta = (lo + hi) / 2
                staff = {name: staffing_rule(load, beta[regime_by_hour])}
                run = _run_one(sub, name, staff, routing)
                for r in (0, 1):
                    rm = sub.regime == r
                    if not rm.any():
                        continue
                    sim_med = np.median(sub.sim_wait[rm & ~sub.sim_abandoned])
                    if np.median(run.wait[rm & ~run.abandoned]) > sim_med:
                        lo[r] = beta[r]  # waits too long: more agents
                    else:
                        hi[r] = beta[r]
            beta = (lo + hi) / 2
            staff = {name: staffing_rule(load, beta[regime_by_hour])}
            got = wait_summary(*_waits(_run_one(sub, name, staff, routing)))
            error = max(abs(got[k] / target[k] - 1) for k in target)
            if progress:
                progress(
                    f"calibrate {name}: routing share {share:.2f}, sd {sd} -> worst error {error:.1%}"
                )
            if best is None or error < best[0]:
                best = (error, share, sd, beta, staff[name], got)
        error, share, sd, beta, staff, got = best
        world.staffing[name] = staff
        world.routing[name] = (share * regime_median, sd)
        result[name] = (
            {
                "routing_share": share,
                "routing_sd": sd,
                "beta_before": float(beta[0]),
                "beta_after": float(beta[1]),
                "mean_agents": float(staff.mean()),
                "worst_error": error,
            }
            | {f"fifo_{k}": v for k, v in got.items()}
            | {f"simulator_{k}": v for k, v in target.items()}
        )
    return result


def _subworld(world: World, mask: np.ndarray) -> World:
    return World(
        frame=world.frame.filter(pl.Series(mask)),
        **{
            k: getattr(world, k)[mask]
            for k in (
                "arrival",
                "channel",
                "regime",
                "day",
                "service",
                "patience",
                "routing_z",
                "callback_coin",
                "convert_coin",
                "base_logit",
                "inquiry",
                "follow_default",
                "explore_coin",
                "explore_follow",
                "sim_wait",
                "sim_abandoned",
                "order_value",
            )
        },
        hours=world.hours,
    )


def _run_one(sub: World, name: str, staffing, routing) -> QueueRun:
    staff = {n: staffing.get(n, np.ones(sub.hours, int)) for n in SYNC}
    route = {n: routing.get(n, (np.zeros(2), 1.0)) for n in SYNC}
    return run_queue(sub, staffing=staff, routing=route)


def _waits(run: QueueRun) -> tuple[np.ndarray, np.ndarray]:
    return run.wait, run.abandoned


# --- outcomes -------------------------------------------------------------------------------------


def long_wait_effect(wait: np.ndarray, abandoned: np.ndarray) -> np.ndarray:
    e = EFFECTS
    doublings = np.maximum(np.log2(np.maximum(wait, 1.0) / e.long_wait_free_seconds), 0.0)
    return np.maximum(e.long_wait_per_doubling * doublings, e.driver_floor) + np.where(
        abandoned, e.abandoned, 0.0
    )


def order_probability(world: World, run: QueueRun, follow: np.ndarray) -> np.ndarray:
    """Each contact's own chance of an order under the simulator's laws for this wait and follow-up."""
    # Missed contacts always get a "sorry we missed you": no no_follow_up effect for them.
    missing = ~run.abandoned & ~follow
    no_follow = np.where(world.inquiry, EFFECTS.no_follow_up_on_inquiry, EFFECTS.no_follow_up_other)
    logit = (
        world.base_logit
        + long_wait_effect(run.wait, run.abandoned)
        + np.where(missing, no_follow, 0.0)
    )
    return _sigmoid(logit)


def follow_up_uplift(world: World, run: QueueRun) -> np.ndarray:
    """The true per-contact effect of sending a follow-up (0 for abandoned contacts)."""
    every = np.ones(len(world.arrival), dtype=bool)
    return order_probability(world, run, every) - order_probability(world, run, ~every)


@dataclass
class Outcome:
    name: str
    run: QueueRun
    follow: np.ndarray
    converted: np.ndarray
    p_order: np.ndarray


def outcome(world: World, name: str, run: QueueRun, follow: np.ndarray) -> Outcome:
    p = order_probability(world, run, follow)
    return Outcome(name, run, follow, world.convert_coin < p, p)


def _priority_with_boost(world: World, score: np.ndarray, boost_seconds: float) -> np.ndarray:
    """Serve as if a contact arrived earlier by up to ``boost_seconds`` (by its score's rank).

    A bounded head start rather than strict priority: no contact waits more than about
    ``boost_seconds`` longer than under FIFO, so no group starves.
    """
    rank = np.argsort(np.argsort(score)) / max(len(score) - 1, 1)
    return world.arrival - boost_seconds * rank


# --- models from a separate training run ----------------------------------------------------------


def encode(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    from features.simulate import INTENTS, SEGMENTS

    levels = {"channel": list(SYNC), "intent": list(INTENTS), "segment": list(SEGMENTS)}
    return frame.select(
        [
            pl.col(f).cast(pl.Enum(levels[f])).to_physical().cast(pl.Float64)
            if f in levels
            else pl.col(f).cast(pl.Float64)
            for f in features
        ]
    ).to_numpy()


@dataclass
class Models:
    arrival_booster: object
    after_booster: object
    uplift: object
    uplift_source: str
    training_report: dict


def train_models(
    train: World, run: QueueRun, seed: int, explore_share: float, num_threads: int
) -> Models:
    """Arrival P(order), after-contact P(order) and follow-up uplift, from a logged training world.

    The logged follow-ups are the agents' own decisions (better agents send more: confounded) except
    for an exploration share decided by a fair coin. The uplift model is a DR-learner with a
    propensity model on all rows; the randomised rows judge it (Qini) against a T-learner on them.
    """
    import lightgbm as lgb

    from training.uplift import UpliftParams, fit_uplift, qini_coefficient

    explore = train.explore_coin < explore_share
    follow = np.where(explore, train.explore_follow, train.follow_default)
    logged = outcome(train, "logged", run, follow)
    served = ~run.abandoned
    frame = train.frame.with_columns(pl.Series("wait", run.wait))
    y = logged.converted.astype(float)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 100,
        "learning_rate": 0.05,
        "num_threads": num_threads,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    x_arrival = encode(frame, ARRIVAL_FEATURES)
    arrival_booster = lgb.train(params, lgb.Dataset(x_arrival, y), 200)
    x_after = encode(frame.filter(pl.Series(served)), AFTER_FEATURES)
    y_after, t_after = y[served], follow[served]
    after_booster = lgb.train(params, lgb.Dataset(x_after, y_after), 200)
    up = UpliftParams(num_threads=num_threads, seed=seed, rounds=150)
    truth = follow_up_uplift(train, run)[served]
    rng = np.random.default_rng(seed)
    hold = rng.random(len(y_after)) < 0.3
    exp_rows = explore[served]
    candidates = {
        "dr_all_rows": lambda m: fit_uplift(
            x_after[m], y_after[m], t_after[m], learner="dr", propensity="model", params=up
        ),
        "s_all_rows": lambda m: fit_uplift(
            x_after[m], y_after[m], t_after[m], learner="s", params=up
        ),
        "x_all_rows": lambda m: fit_uplift(
            x_after[m], y_after[m], t_after[m], learner="x", propensity="model", params=up
        ),
        "s_exploration_rows": lambda m: fit_uplift(
            x_after[m & exp_rows],
            y_after[m & exp_rows],
            t_after[m & exp_rows],
            learner="s",
            params=up,
        ),
        "t_exploration_rows": lambda m: fit_uplift(
            x_after[m & exp_rows],
            y_after[m & exp_rows],
            t_after[m & exp_rows],
            learner="t",
            params=up,
        ),
    }
    report = {}
    judge = hold & exp_rows
    for name, fit in candidates.items():
        model = fit(~hold)
        scores = model.predict(x_after[judge])[0]
        report[name] = {
            "holdout_qini_on_randomised_rows": qini_coefficient(
                scores, y_after[judge], t_after[judge]
            ),
            "corr_with_true_uplift": float(
                np.corrcoef(model.predict(x_after[hold])[0], truth[hold])[0, 1]
            ),
        }
    chosen = max(report, key=lambda k: report[k]["holdout_qini_on_randomised_rows"])
    uplift_model = candidates[chosen](np.ones(len(y_after), dtype=bool))
    report["chosen"] = chosen
    report["explore_share"] = explore_share
    report["logged_follow_up_rate"] = float(t_after.mean())
    naive = y_after[t_after].mean() - y_after[~t_after].mean()
    report["naive_follow_up_effect"] = float(naive)
    report["true_mean_follow_up_effect"] = float(truth.mean())
    return Models(arrival_booster, after_booster, uplift_model, chosen, report)


# --- policies and the comparison -------------------------------------------------------------------


def run_policies(
    world: World,
    models: Models,
    *,
    boost_seconds: float = 180.0,
    follow_up_budget_share: float = 0.5,
    seed: int = 0,
) -> tuple[list[Outcome], dict]:
    """Every policy on the same world. Returns the outcomes and the follow-up comparison."""
    x_arrival = encode(world.frame, ARRIVAL_FEATURES)
    p_arrival = models.arrival_booster.predict(x_arrival, num_threads=1)
    fifo_run = run_queue(world)
    outcomes = [outcome(world, "fifo", fifo_run, world.follow_default)]
    runs = {
        "priority_p_order": run_queue(world, _priority_with_boost(world, p_arrival, boost_seconds)),
        "priority_expected_value": run_queue(
            world, _priority_with_boost(world, p_arrival * world.order_value, boost_seconds)
        ),
    }
    phone = world.channel == SYNC.index("phone")
    threshold = np.median(p_arrival[phone])
    runs["callback_by_model"] = run_queue(world, callback_offer=phone & (p_arrival >= threshold))
    for name, run in runs.items():
        outcomes.append(outcome(world, name, run, world.follow_default))

    # Follow-ups under a daily budget, on FIFO's served contacts.
    served = ~fifo_run.abandoned
    frame = world.frame.with_columns(pl.Series("wait", fifo_run.wait))
    x_after = encode(frame, AFTER_FEATURES)
    scores = {
        "random": np.random.default_rng(seed).random(len(served)),
        "p_order": models.after_booster.predict(x_after, num_threads=1),
        "uplift": models.uplift.predict(x_after)[0],
        "true_uplift": follow_up_uplift(world, fifo_run),
    }
    budget_per_day = {}
    for d in np.unique(world.day):
        budget_per_day[d] = int(round(follow_up_budget_share * (served & (world.day == d)).sum()))
    none = outcome(world, "follow_up_none", fifo_run, np.zeros(len(served), bool))
    follow_rows = {}
    for name, score in scores.items():
        chosen = _budgeted(score, served, world.day, budget_per_day)
        o = outcome(world, f"follow_up_{name}", fifo_run, chosen)
        outcomes.append(o)
        follow_rows[name] = (o, chosen)
    return outcomes, {"none": none, "rows": follow_rows, "budget_per_day": budget_per_day}


def _budgeted(score, eligible, day, budget_per_day) -> np.ndarray:
    chosen = np.zeros(len(score), dtype=bool)
    for d, budget in budget_per_day.items():
        idx = np.flatnonzero(eligible & (day == d))
        top = idx[np.argsort(-score[idx], kind="stable")[:budget]]
        chosen[top] = True
    return chosen


def _day_bootstrap(per_day: np.ndarray, seed: int) -> tuple[float, float]:
    """95% interval of a total over days, resampling days (the queue ties contacts within a day)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(per_day), (BOOTSTRAP_DRAWS, len(per_day)))
    totals = per_day[draws].sum(axis=1)
    low, high = np.percentile(totals, [2.5, 97.5])
    return float(low), float(high)


def summarise(world: World, outcomes: list[Outcome], follow: dict, seed: int) -> dict:
    days = np.unique(world.day)
    day_index = np.searchsorted(days, world.day)

    def per_day(values):
        return np.bincount(day_index, weights=values.astype(float), minlength=len(days))

    fifo = outcomes[0]
    policies = {}
    segments = world.frame["segment"].to_numpy()
    for o in outcomes:
        low, high = _day_bootstrap(per_day(o.converted), seed)
        dlow, dhigh = _day_bootstrap(per_day(o.converted) - per_day(fifo.converted), seed)
        served_wait = o.run.wait[~o.run.abandoned]
        policies[o.name] = {
            "orders": int(o.converted.sum()),
            "orders_ci_low": low,
            "orders_ci_high": high,
            "expected_orders": float(o.p_order.sum()),
            "diff_vs_fifo": int(o.converted.sum() - fifo.converted.sum()),
            "diff_ci_low": dlow,
            "diff_ci_high": dhigh,
            "diff_vs_fifo_relative": float(o.converted.sum() / fifo.converted.sum() - 1),
            "order_value": float((o.converted * world.order_value).sum()),
            "mean_wait_s": float(served_wait.mean()),
            "p95_wait_s": float(np.percentile(served_wait, 95)),
            "abandonment_rate": float(o.run.abandoned.mean()),
            "follow_ups": int((o.follow & ~o.run.abandoned).sum()),
            "segments": {
                s: {
                    "contacts": int((segments == s).sum()),
                    "mean_wait_s": float(o.run.wait[(segments == s) & ~o.run.abandoned].mean()),
                    "p95_wait_s": float(
                        np.percentile(o.run.wait[(segments == s) & ~o.run.abandoned], 95)
                    ),
                    "abandonment_rate": float(o.run.abandoned[segments == s].mean()),
                }
                for s in sorted(set(segments))
            },
        }
    none = follow["none"]
    incremental = {}
    for name, (o, chosen) in follow["rows"].items():
        gain = per_day(o.converted) - per_day(none.converted)
        sent = per_day(chosen)
        low, high = _ratio_bootstrap(gain, sent, seed)
        incremental[name] = {
            "follow_ups": int(chosen.sum()),
            "incremental_orders": int(gain.sum()),
            "incremental_per_follow_up": float(gain.sum() / max(chosen.sum(), 1)),
            "ci_low": low,
            "ci_high": high,
            "expected_incremental_per_follow_up": float(
                (o.p_order - none.p_order).sum() / max(chosen.sum(), 1)
            ),
        }
    up, po = incremental["uplift"], incremental["p_order"]
    ratio_low, ratio_high = _two_ratio_bootstrap(follow, per_day, seed)
    return {
        "policies": policies,
        "follow_up_targeting": incremental,
        "uplift_vs_p_order": {
            "ratio": up["expected_incremental_per_follow_up"]
            / po["expected_incremental_per_follow_up"],
            "ratio_realised": up["incremental_per_follow_up"] / po["incremental_per_follow_up"]
            if po["incremental_per_follow_up"]
            else float("nan"),
            "ratio_ci_low": ratio_low,
            "ratio_ci_high": ratio_high,
        },
        "days": len(days),
        "queued_contacts": len(world.arrival),
    }


def _ratio_bootstrap(gain, sent, seed):
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gain), (BOOTSTRAP_DRAWS, len(gain)))
    values = gain[draws].sum(axis=1) / np.maximum(sent[draws].sum(axis=1), 1)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _two_ratio_bootstrap(follow, per_day, seed):
    none = per_day(follow["none"].converted)
    (ou, cu), (op, cp) = follow["rows"]["uplift"], follow["rows"]["p_order"]
    gu, su = per_day(ou.converted) - none, per_day(cu)
    gp, sp = per_day(op.converted) - none, per_day(cp)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(none), (BOOTSTRAP_DRAWS, len(none)))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (gu[draws].sum(1) / su[draws].sum(1)) / (gp[draws].sum(1) / sp[draws].sum(1))
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def policy_plot(summary: dict, path: Path) -> Path:
    from training.plots import _pyplot, _save

    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = [n for n in summary["policies"] if n != "fifo" and not n.startswith("follow_up")]
    rows = [summary["policies"][n] for n in names]
    y = np.arange(len(names))
    diff = np.array([r["diff_vs_fifo"] for r in rows])
    err = np.array(
        [
            [r["diff_vs_fifo"] - r["diff_ci_low"] for r in rows],
            [r["diff_ci_high"] - r["diff_vs_fifo"] for r in rows],
        ]
    )
    ax1.barh(y, diff, xerr=err, color="#4c78a8", capsize=3)
    ax1.axvline(0, color="k", lw=0.8)
    ax1.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax1.set_xlabel("orders vs FIFO (95% CI over days)")
    ax1.set_title("Queue policies, same staffing", fontsize=9)
    ft = summary["follow_up_targeting"]
    names2 = list(ft)
    vals = [ft[n]["incremental_per_follow_up"] for n in names2]
    err2 = np.array(
        [
            [ft[n]["incremental_per_follow_up"] - ft[n]["ci_low"] for n in names2],
            [ft[n]["ci_high"] - ft[n]["incremental_per_follow_up"] for n in names2],
        ]
    )
    ax2.bar(np.arange(len(names2)), vals, yerr=err2, color="#f58518", capsize=3)
    ax2.set_xticks(np.arange(len(names2)), [n.replace("_", " ") for n in names2], fontsize=8)
    ax2.set_ylabel("incremental orders per follow-up")
    ax2.set_title("Follow-ups under a daily budget, by targeting", fontsize=9)
    return _save(fig, path)


def simulate_policies(
    n_contacts: int,
    seed: int,
    *,
    weeks: int = 2,
    boost_seconds: float = 180.0,
    follow_up_budget_share: float = 0.5,
    explore_share: float = 0.1,
    num_threads: int = 1,
    out: Path | None = None,
    progress=None,
) -> dict:
    say = progress or (lambda _m: None)
    say(f"simulating {n_contacts:,} contacts over {weeks} week(s), seed {seed}")
    world = build_world(n_contacts, seed, weeks)
    say(f"{len(world.arrival):,} contacts queue for an agent; calibrating the queue")
    calibration = calibrate(world, progress=say)
    train = build_world(n_contacts, seed + 1, weeks)
    for ch, name in enumerate(SYNC):  # the training run is staffed by the same rule
        train.staffing[name] = staffing_rule(offered_load(train, ch), 0.0)
        beta = np.where(
            np.arange(train.hours) * HOUR >= train.arrival[train.regime == 1].min()
            if (train.regime == 1).any()
            else np.inf,
            calibration[name]["beta_after"],
            calibration[name]["beta_before"],
        )
        train.staffing[name] = staffing_rule(offered_load(train, ch), beta)
        train.routing[name] = world.routing[name]
    say("training the arrival, after-contact and follow-up uplift models on a separate run")
    models = train_models(train, run_queue(train), seed, explore_share, num_threads)
    say("running the policies")
    outcomes, follow = run_policies(
        world,
        models,
        boost_seconds=boost_seconds,
        follow_up_budget_share=follow_up_budget_share,
        seed=seed,
    )
    summary = summarise(world, outcomes, follow, seed)
    result = {
        "n_contacts": n_contacts,
        "seed": seed,
        "weeks": weeks,
        "boost_seconds": boost_seconds,
        "follow_up_budget_share": follow_up_budget_share,
        "calibration": calibration,
        "models": models.training_report,
    } | summary
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "policy.json").write_text(json.dumps(result, indent=1))
        policy_plot(summary, out / "policy.png")
    return result
