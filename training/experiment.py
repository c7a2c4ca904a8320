"""Switchback (time-sliced) experiments: plan one from the data's own volume and variance, analyse it.

A contact centre cannot randomise contacts one by one when the treatment is the routing policy
itself: every contact in the queue shares it. A switchback turns the policy ON and OFF in time
slices assigned at random (balanced within each day, so day-of-week and season cancel out), and
compares the contact-to-order ratio of ON slices with OFF slices.

- **Plan.** From logged contacts (time + outcome) the slices of each candidate length give a
  slice-level variance of the ratio estimator; the number of slices for a minimum detectable effect
  at the given power follows, and from it the duration. Shorter slices need fewer days but carry
  more contamination (contacts queued under one arm are served under the next): the plan drops a
  burn-in at the start of every slice and says how much data that costs.
- **Analyse.** The ratio of each arm (orders / contacts over its slices) and their difference, with
  a cluster-robust (slice-level) standard error by the delta method and Student t with
  ``slices - 2`` degrees of freedom; and a randomisation-inference p-value that re-draws the
  assignment exactly as the plan did (ON/OFF permuted within each day).

Slices, not contacts, are the units of randomisation: a contact-level standard error would ignore
that contacts of one slice share its staffing and its hour, and would be far too narrow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from scipy import stats

from features.errors import CTOError

DEFAULT_SLICE_MINUTES = (30, 60, 120, 240)
PERMUTATIONS = 2000


def _require(frame: pl.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CTOError(
            f"column(s) {', '.join(map(repr, missing))} not in the table (columns: {', '.join(frame.columns)})"
        )


def slice_counts(
    frame: pl.DataFrame, time_column: str, label: str, slice_minutes: int, burn_in_minutes: int = 0
) -> pl.DataFrame:
    """Contacts and orders per time slice (slices start at midnight UTC); burn-in contacts dropped."""
    _require(frame, [time_column, label])
    every = f"{slice_minutes}m"
    t = pl.col(time_column)
    sliced = frame.select(t.alias("_t"), pl.col(label).cast(pl.Float64).alias("_y")).with_columns(
        pl.col("_t").dt.truncate(every).alias("slice_start")
    )
    if burn_in_minutes:
        sliced = sliced.filter(
            pl.col("_t") >= pl.col("slice_start") + pl.duration(minutes=burn_in_minutes)
        )
    return (
        sliced.group_by("slice_start")
        .agg(pl.len().alias("contacts"), pl.col("_y").sum().alias("orders"))
        .sort("slice_start")
        .with_columns(pl.col("slice_start").dt.date().alias("day"))
    )


@dataclass(frozen=True)
class SliceOption:
    slice_minutes: int
    slices_per_day: float
    contacts_per_slice: float
    ratio: float
    slice_sd: float
    slices_needed: int
    days_needed: float
    burn_in_share: float


@dataclass(frozen=True)
class Plan:
    mde_relative: float
    mde_absolute: float
    alpha: float
    power: float
    burn_in_minutes: int
    options: list[SliceOption]
    chosen: SliceOption

    def to_dict(self) -> dict:
        return asdict(self)


def plan_switchback(
    frame: pl.DataFrame,
    time_column: str,
    label: str,
    *,
    mde_relative: float = 0.05,
    alpha: float = 0.05,
    power: float = 0.8,
    slice_minutes: tuple[int, ...] = DEFAULT_SLICE_MINUTES,
    burn_in_minutes: int = 10,
) -> Plan:
    """Slices and days needed to detect a relative change ``mde_relative`` in the contact-to-order ratio.

    With S slices per arm, Var(ratio_on - ratio_off) = 2 s^2 / (S nbar^2), s^2 the variance of the
    slice residuals ``orders - ratio x contacts``. Solving ``mde = (z_{1-alpha/2} + z_power) x se``
    for S gives the slices; the days follow from the slices a day holds. The chosen length is the
    one needing the fewest days among those at least 4x the burn-in (short slices lose too much).
    """
    if not 0 < mde_relative < 1:
        raise CTOError(f"mde_relative={mde_relative}: expected a share between 0 and 1 (0.05 = 5%)")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    total = frame.height
    options = []
    for minutes in slice_minutes:
        counts = slice_counts(frame, time_column, label, minutes, burn_in_minutes)
        kept = int(counts["contacts"].sum())
        n, o = counts["contacts"].to_numpy().astype(float), counts["orders"].to_numpy()
        if len(n) < 4 or n.sum() == 0:
            raise CTOError(f"too few {minutes}-minute slices with contacts to estimate a variance")
        ratio = o.sum() / n.sum()
        resid = o - ratio * n
        s2 = resid.var(ddof=1)
        nbar = n.mean()
        mde_abs = mde_relative * ratio
        per_arm = int(np.ceil(2 * s2 * z**2 / (nbar**2 * mde_abs**2)))
        days = counts["day"].n_unique()
        per_day = len(n) / max(days, 1)
        options.append(
            SliceOption(
                minutes,
                per_day,
                nbar,
                ratio,
                float(np.sqrt(s2)),
                2 * per_arm,
                2 * per_arm / per_day,
                1 - kept / total,
            )
        )
    usable = [o for o in options if o.slice_minutes >= 4 * burn_in_minutes] or options
    chosen = min(usable, key=lambda o: o.days_needed)
    return Plan(
        mde_relative, mde_relative * chosen.ratio, alpha, power, burn_in_minutes, options, chosen
    )


def schedule(start: datetime, days: int, slice_minutes: int, seed: int) -> pl.DataFrame:
    """The switchback schedule: every slice of every day, half ON and half OFF at random per day."""
    if (24 * 60) % slice_minutes:
        raise CTOError(
            f"slice of {slice_minutes} minutes: must divide a day (e.g. 30, 60, 120, 240)"
        )
    per_day = 24 * 60 // slice_minutes
    rng = np.random.default_rng(seed)
    day0 = datetime(start.year, start.month, start.day, tzinfo=start.tzinfo)
    rows_start, arms = [], []
    for d in range(days):
        arm = np.array([1] * (per_day // 2) + [0] * (per_day - per_day // 2))
        rng.shuffle(arm)
        for k in range(per_day):
            rows_start.append(day0 + timedelta(days=d, minutes=k * slice_minutes))
            arms.append("on" if arm[k] else "off")
    return (
        pl.DataFrame({"slice_start": rows_start, "arm": arms})
        .with_columns(
            (pl.col("slice_start") + pl.duration(minutes=slice_minutes)).alias("slice_end")
        )
        .select("slice_start", "slice_end", "arm")
    )


@dataclass(frozen=True)
class Analysis:
    slices_on: int
    slices_off: int
    contacts_on: int
    contacts_off: int
    ratio_on: float
    ratio_off: float
    effect: float
    ci_low: float
    ci_high: float
    se: float
    relative_effect: float
    p_value: float
    p_value_randomisation: float

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio_and_var(n: np.ndarray, o: np.ndarray) -> tuple[float, float]:
    """Ratio estimator sum(o)/sum(n) and its cluster-robust variance (delta method, small-sample)."""
    ratio = o.sum() / n.sum()
    m = len(n)
    resid = o - ratio * n
    return ratio, m / (m - 1) * float((resid**2).sum()) / n.sum() ** 2


def analyse_slices(
    contacts: np.ndarray,
    orders: np.ndarray,
    on: np.ndarray,
    day: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> Analysis:
    """Effect of ON on the contact-to-order ratio from per-slice counts (slices are the clusters)."""
    contacts, orders = np.asarray(contacts, float), np.asarray(orders, float)
    on = np.asarray(on).astype(bool)
    if on.sum() < 2 or (~on).sum() < 2:
        raise CTOError(
            f"need at least 2 ON and 2 OFF slices with contacts (got {on.sum()} ON, {(~on).sum()} OFF)"
        )
    r1, v1 = _ratio_and_var(contacts[on], orders[on])
    r0, v0 = _ratio_and_var(contacts[~on], orders[~on])
    effect, se = r1 - r0, float(np.sqrt(v1 + v0))
    df = len(on) - 2
    q = stats.t.ppf(1 - alpha / 2, df)
    p = float(2 * stats.t.sf(abs(effect) / se, df)) if se > 0 else float(effect == 0)
    p_ri = float("nan")
    if permutations:
        p_ri = _randomisation_p(
            contacts, orders, on, day, observed=effect, permutations=permutations, seed=seed
        )
    return Analysis(
        int(on.sum()),
        int((~on).sum()),
        int(contacts[on].sum()),
        int(contacts[~on].sum()),
        float(r1),
        float(r0),
        float(effect),
        float(effect - q * se),
        float(effect + q * se),
        se,
        float(effect / r0) if r0 else float("nan"),
        p,
        p_ri,
    )


def _randomisation_p(contacts, orders, on, day, *, observed, permutations, seed) -> float:
    """Share of re-drawn assignments (ON permuted within each day) with an effect at least as large."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.flatnonzero(day == d) for d in np.unique(day)]
        if day is not None
        else [np.arange(len(on))]
    )
    draws = np.empty((permutations, len(on)), dtype=bool)
    for i in range(permutations):
        assignment = on.copy()
        for g in groups:
            assignment[g] = rng.permutation(on[g])
        draws[i] = assignment
    n_on, o_on = draws @ contacts, draws @ orders
    n_off, o_off = contacts.sum() - n_on, orders.sum() - o_on
    with np.errstate(divide="ignore", invalid="ignore"):
        effects = o_on / n_on - o_off / n_off
    return float((np.sum(np.abs(effects) >= abs(observed) - 1e-12) + 1) / (permutations + 1))


def analyse_switchback(
    frame: pl.DataFrame,
    time_column: str,
    label: str,
    plan_schedule: pl.DataFrame,
    *,
    burn_in_minutes: int = 0,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[Analysis, pl.DataFrame]:
    """Join logged contacts to the schedule's slices, drop burn-in and unscheduled contacts, analyse.

    Returns the analysis and the per-slice table (slice_start, arm, contacts, orders).
    """
    _require(frame, [time_column, label])
    _require(plan_schedule, ["slice_start", "slice_end", "arm"])
    bad = plan_schedule.filter(~pl.col("arm").is_in(["on", "off"]))
    if bad.height:
        raise CTOError(
            f"schedule column 'arm': {bad.height} row(s) are not 'on'/'off', e.g. {bad['arm'][0]!r}"
        )
    sched = plan_schedule.sort("slice_start").with_columns(
        pl.col("slice_start", "slice_end").cast(frame.schema[time_column])
    )
    logged = (
        frame.select(pl.col(time_column).alias("_t"), pl.col(label).cast(pl.Float64).alias("_y"))
        .sort("_t")
        .join_asof(sched, left_on="_t", right_on="slice_start", strategy="backward")
        .filter(pl.col("slice_start").is_not_null() & (pl.col("_t") < pl.col("slice_end")))
        .filter(pl.col("_t") >= pl.col("slice_start") + pl.duration(minutes=burn_in_minutes))
    )
    per_slice = (
        logged.group_by("slice_start", "arm")
        .agg(pl.len().alias("contacts"), pl.col("_y").sum().alias("orders"))
        .sort("slice_start")
        .with_columns(pl.col("slice_start").dt.date().alias("day"))
    )
    if per_slice.height == 0:
        raise CTOError(
            "no logged contact falls inside a scheduled slice: check the time column and the schedule"
        )
    analysis = analyse_slices(
        per_slice["contacts"].to_numpy(),
        per_slice["orders"].to_numpy(),
        (per_slice["arm"] == "on").to_numpy(),
        per_slice["day"].to_numpy(),
        alpha=alpha,
        seed=seed,
    )
    return analysis, per_slice


def simulate_switchback(
    rng: np.random.Generator,
    *,
    days: int,
    slices_per_day: int,
    contacts_per_slice: float,
    base_ratio: float,
    effect: float,
    slice_sd: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """A synthetic switchback with a known effect: per slice (contacts, orders, on, day) and the truth.

    Volume follows a daily wave with Poisson noise; each slice's ratio moves with the hour of the day
    and a slice-level shock (logit sd ``slice_sd``: staffing, campaigns), and ON adds ``effect`` to
    every contact's chance. The true effect on the ratio is ``effect`` exactly (additive, no clipping
    for the rates used).
    """
    hours = (np.arange(slices_per_day) + 0.5) * 24 / slices_per_day
    wave = 0.4 + np.clip(np.sin((hours - 6) / 24 * 2 * np.pi), -0.3, 1.0) * 1.2
    n = rng.poisson(contacts_per_slice * np.tile(wave / wave.mean(), days))
    logit = np.log(base_ratio / (1 - base_ratio)) + 0.2 * np.tile(
        np.cos(hours / 24 * 2 * np.pi), days
    )
    p0 = 1 / (1 + np.exp(-(logit + rng.normal(0, slice_sd, len(n)))))
    on = np.concatenate([rng.permutation(np.arange(slices_per_day) % 2 == 0) for _ in range(days)])
    orders = rng.binomial(n, np.clip(p0 + effect * on, 0, 1))
    day = np.repeat(np.arange(days), slices_per_day)
    keep = n > 0
    return n[keep], orders[keep], on[keep], day[keep], effect
