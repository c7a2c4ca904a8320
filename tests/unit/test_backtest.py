"""Rolling-origin backtest: folds never train on the future; bootstrap intervals; the gate."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from training.backtest import (
    BASE_RATE,
    LIGHTGBM,
    LINEAR,
    BacktestInput,
    make_folds,
    run_backtest,
)
from training.intervals import point_metrics
from training.promote import gate
from training.schemes import Scheme


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(400, 3000),
    horizon=st.floats(0.0, 30.0),
    distinct=st.integers(3, 400),
    k=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_folds_never_train_on_the_future(n, horizon, distinct, k, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, distinct, n).astype(np.float64))
    known = t + horizon
    y = (rng.random(n) < 0.3).astype(np.int64)
    try:
        folds, _ = make_folds(t, known, y, k)
    except Exception as exc:  # no usable fold: must say so in words
        assert "no fold has enough rows" in str(exc)
        return
    assert len(folds) <= k
    for fold in folds:
        train = fold.train_mask(t, known)
        test = fold.test_mask(t)
        assert not (train & test).any()
        # every training row happened, and its label was known, before the first test row
        assert t[train].max() < t[test].min()
        assert known[train].max() <= fold.origin <= t[test].min()
    ends = [f.end for f in folds]
    assert ends == sorted(ends)


def test_labels_known_after_the_origin_are_not_training_rows():
    t = np.repeat(np.arange(100.0), 10)
    known = t + 7.0  # a 7-day label horizon
    y = np.tile([0, 0, 0, 1, 0, 0, 1, 0, 0, 0], 100)
    folds, _ = make_folds(t, known, y, 2)
    fold = folds[0]
    train = fold.train_mask(t, known)
    # the week before the origin is still open: its outcomes were not known yet
    assert not train[(t > fold.origin - 7) & (t < fold.origin)].any()
    assert train[t <= fold.origin - 7].all()


def test_schemes_keep_recent_rows_and_weigh_by_age():
    t = np.array([0.0, 50.0, 90.0, 99.0])
    keep, weight = Scheme(window=20).rows(t, 100.0)
    assert keep.tolist() == [False, False, True, True]
    keep, weight = Scheme(half_life=50).rows(t, 100.0)
    assert keep.all()
    assert weight == pytest.approx([0.25, 0.5, 0.5 ** (10 / 50), 0.5 ** (1 / 50)])


def test_bootstrap_point_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.2).astype(int)
    p = np.round(np.clip(0.2 + 0.2 * y + rng.normal(0, 0.2, 3000), 0.01, 0.99), 2)  # ties
    ours = point_metrics(y, p)
    assert ours["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert ours["pr_auc"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)


def test_gate_rejects_a_challenger_whose_gain_is_inside_noise():
    rng = np.random.default_rng(11)
    n = 4000
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal - 1.5)))).astype(int)
    champion = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.0, n))))
    # a challenger that is the champion plus a little jitter: any gain it shows is luck
    jitter = 1 / (1 + np.exp(-(np.log(champion / (1 - champion)) + rng.normal(0, 0.05, n))))
    auc_gain = skm.roc_auc_score(y, jitter) - skm.roc_auc_score(y, champion)
    promoted, gain = gate((y, jitter, champion), "roc_auc", 0.0, seed=1, n_boot=200)
    assert not promoted
    assert gain.low <= 0 <= gain.high
    assert gain.value == pytest.approx(auc_gain)
    # a challenger that sees the signal without the champion's noise clearly wins
    better = 1 / (1 + np.exp(-signal))
    promoted, gain = gate((y, better, champion), "roc_auc", 0.0, seed=1, n_boot=200)
    assert promoted and gain.low > 0
    # ... unless the configured margin asks for more than it shows
    promoted, _ = gate((y, better, champion), "roc_auc", gain.high, seed=1, n_boot=200)
    assert not promoted


def test_gate_on_losses_rejects_noise_and_takes_a_real_gain():
    rng = np.random.default_rng(5)
    champion = rng.exponential(1.0, 3000)
    same = champion + rng.normal(0, 0.01, 3000)
    assert not gate((same, champion), "log_loss", 0.0, seed=2)[0]
    assert gate((champion * 0.8, champion), "log_loss", 0.0, seed=2)[0]


def _drifting_table(n: int, seed: int) -> BacktestInput:
    """Time-ordered rows; in the last test window a feature equals the label (a planted leak)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 100, n))
    x1 = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x1 - 1.0)))).astype(np.int8)
    leak = rng.normal(size=n)
    last = t >= np.quantile(t, 0.8)
    leak[last] = y[last]
    frame = pl.DataFrame({"x1": x1, "leak": leak, "_t": t, "_known": t, "_y": y})
    return BacktestInput(
        frame=frame,
        features=["x1", "leak"],
        categorical=[],
        unit="days",
        source="synthetic",
        label="y",
        digest="synthetic",
        task="table",
    )


def test_backtest_scores_models_on_windows_they_never_saw(mlflow_settings):
    data = _drifting_table(3000, seed=4)
    result = run_backtest(
        data, mlflow_settings.model_copy(update={"num_threads": 1}), folds=2, n_boot=40,
        track=False,
    )  # fmt: skip
    last = result.folds[-1].index
    lgbm_auc = result.per_fold[f"{LIGHTGBM}/expanding"][last]["roc_auc"].value
    # had the last fold trained on its own window, the leak would score ~1.0
    assert lgbm_auc < 0.9
    assert result.per_fold[f"{BASE_RATE}/expanding"][last]["roc_auc"].value == pytest.approx(0.5)
    assert result.recommended_family in (LIGHTGBM, LINEAR)
    assert result.family_gain.low <= result.family_gain.value <= result.family_gain.high
    # the frozen-model curve starts at each fold's own LightGBM score, then ages forward
    for point in result.decay_points:
        k, j = point["trained_at_fold"], point["scored_on_fold"]
        assert j >= k
        if j == k:
            expected = result.per_fold[f"{LIGHTGBM}/expanding"][k]["roc_auc"].value
            assert point["roc_auc"] == pytest.approx(expected)
    assert len(result.decay_points) == 3  # (1,1), (1,2), (2,2)
