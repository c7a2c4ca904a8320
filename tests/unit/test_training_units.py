"""Unit tests of the training building blocks on small hand-made frames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from features.encoding import encode, fit_encoding
from features.errors import CTOError
from training.baselines import fit_one_rule
from training.calibration import choose_calibration, sigmoid
from training.data import split_expr, time_windows
from training.metrics import (
    binary_metrics,
    expected_calibration_error,
    lift_metrics,
    multiclass_metrics,
)

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_encoding_fixes_levels_and_maps_unseen_and_null_to_missing():
    train = pl.DataFrame(
        {
            "channel": pl.Series(
                ["phone", "chat", "phone"], dtype=pl.Enum(["phone", "chat", "email"])
            ),
            "region": ["north", "south", None],
            "wait_seconds": [10.0, None, 30.0],
            "follow_up_sent": [True, False, None],
        }
    )
    encoding = fit_encoding(
        train, ["channel", "region", "wait_seconds", "follow_up_sent"], ["channel"]
    )
    assert encoding.category_levels == {
        "channel": ("phone", "chat", "email"),
        "region": ("north", "south"),
    }
    scoring = pl.DataFrame(
        {
            "channel": ["email", "fax"],  # "fax" was never seen: missing, not an error
            "region": ["west", "south"],
            "wait_seconds": [5.0, 7.0],
            "follow_up_sent": [True, None],
            "unrelated": [1, 2],
        }
    )
    x = encode(scoring, encoding)
    assert x.shape == (2, 4)
    assert x[0, 0] == 2.0 and np.isnan(x[1, 0])
    assert np.isnan(x[0, 1]) and x[1, 1] == 1.0
    assert x[0, 3] == 1.0 and np.isnan(x[1, 3])


def test_encoding_names_missing_feature_columns():
    encoding = fit_encoding(pl.DataFrame({"a": [1.0], "b": [2.0]}), ["a", "b"], [])
    with pytest.raises(CTOError, match="b"):
        encode(pl.DataFrame({"a": [1.0]}), encoding)


def test_ece_is_zero_for_calibrated_bins_and_large_for_overconfident_ones():
    p = np.repeat([0.1, 0.5], 1000)
    y = np.concatenate([np.arange(1000) < 100, np.arange(1000) < 500]).astype(int)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(y, np.repeat([0.4, 0.9], 1000)) > 0.3


def test_lift_of_a_perfect_ranking_and_of_a_constant_score():
    y = (np.arange(1000) < 100).astype(int)  # 10% positives
    perfect = lift_metrics(y, -np.arange(1000.0))
    assert perfect["captured_top10"] == pytest.approx(1.0)
    assert perfect["lift_top10"] == pytest.approx(10.0)
    assert perfect["alift"] > 0.94
    shuffled = np.random.default_rng(0).permutation(1000).astype(float)
    assert lift_metrics(y, shuffled)["alift"] == pytest.approx(0.5, abs=0.05)


def test_binary_and_multiclass_metrics_on_known_cases():
    y = np.array([0, 0, 1, 1])
    m = binary_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    mc = multiclass_metrics(np.array([0, 1, 1]), proba, ["a", "b"])
    assert mc["accuracy"] == pytest.approx(2 / 3)
    assert mc["confusion_matrix"] == [[1, 0], [1, 1]]


def test_calibration_fixes_an_overconfident_score_and_leaves_a_calibrated_one():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(-2.0, 1.0, 20_000)
    y = (rng.random(20_000) < sigmoid(true_logit)).astype(int)
    calibrated = choose_calibration(true_logit, y)
    assert calibrated.method == "none"
    overconfident = choose_calibration(3.0 * true_logit + 2.0, y)
    assert overconfident.method == "platt"
    fixed = overconfident.apply(3.0 * true_logit + 2.0)
    assert expected_calibration_error(y, fixed) < 0.01
    assert overconfident.a == pytest.approx(1 / 3, rel=0.1)


def test_time_split_drops_rows_whose_label_is_not_known_by_the_split_end():
    started = pl.Series([T0 + timedelta(days=d) for d in range(0, 60)])
    windows = time_windows(started, horizon_days=7)
    assert windows.start < windows.valid_start < windows.test_start < windows.end
    frame = pl.DataFrame({"started_at": started}).with_columns(
        (pl.col("started_at") + timedelta(days=7)).alias("label_known_at")
    )
    split = frame.with_columns(split_expr(windows))
    train = split.filter(pl.col("split") == "train")
    assert (train["label_known_at"] <= windows.valid_start).all()
    # Contacts in the 7 days before the validation window opens belong to no split.
    gap = split.filter(
        (pl.col("started_at") < windows.valid_start)
        & (pl.col("started_at") > windows.valid_start - timedelta(days=7))
    )
    assert gap.height > 0 and gap["split"].is_null().all()
    # The last 7 days have no known label at all.
    assert (
        split.filter(pl.col("started_at") > windows.end - timedelta(days=7))["split"]
        .is_null()
        .all()
    )
    assert set(split["split"].drop_nulls().unique()) == {"train", "valid", "test"}


def test_time_split_refuses_too_short_a_span():
    started = pl.Series([T0 + timedelta(days=d) for d in range(0, 10)])
    with pytest.raises(CTOError, match="too short"):
        time_windows(started, horizon_days=7)


def test_one_rule_picks_the_informative_feature_and_handles_missing_values():
    rng = np.random.default_rng(2)
    informative = rng.normal(size=5000)
    noise = rng.normal(size=5000)
    y = (rng.random(5000) < sigmoid(2 * informative - 2)).astype(int)
    x = np.column_stack([noise, informative])
    encoding = fit_encoding(
        pl.DataFrame({"noise": noise, "signal": informative}), ["noise", "signal"], []
    )
    rule = fit_one_rule(x, y, encoding)
    assert rule.feature_name == "signal"
    scored = rule.predict(np.array([[0.0, np.nan], [0.0, 3.0], [0.0, -3.0]]))
    assert np.isfinite(scored).all()
    assert scored[1] > scored[2]
