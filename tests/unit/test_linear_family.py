"""The linear model family: the fair logistic regression written out as numbers in the card."""

from __future__ import annotations

import json

import numpy as np

from features.encoding import FeatureEncoding
from training.baselines import export_logistic, fit_logistic
from training.pyfunc_raw import LinearScorer


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.column_stack(
        [
            rng.normal(10, 3, n),
            rng.exponential(2, n),
            np.full(n, 4.0),  # constant: scale 1, no information
            rng.integers(0, 3, n).astype(np.float64),  # category codes
            rng.integers(0, 2, n).astype(np.float64),
        ]
    )
    x[rng.random(n) < 0.1, 1] = np.nan  # missing numbers: median + indicator
    x[rng.random(n) < 0.05, 3] = np.nan  # missing category
    return x


def test_the_exported_logistic_regression_scores_like_the_pipeline_and_explains_additively():
    rng = np.random.default_rng(3)
    encoding = FeatureEncoding(("a", "b", "c", "d", "e"), {"d": ("x", "y", "z"), "e": ("p", "q")})
    x = _rows(rng, 2_000)
    logit = 0.4 * (x[:, 0] - 10) - 0.8 * np.nan_to_num(x[:, 1], nan=3.0) + (x[:, 3] == 2)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)
    pipeline = fit_logistic(x, y, encoding, seed=1)
    # The card is JSON: the scorer must work from the round-tripped numbers.
    scorer = LinearScorer(json.loads(json.dumps(export_logistic(pipeline, x))))

    test = _rows(rng, 500)
    test[:7, 3] = 5.0  # a category code never seen in training: no one-hot column, like sklearn
    raw = scorer.predict(test, raw_score=True)
    np.testing.assert_allclose(raw, pipeline.decision_function(test), atol=1e-9)
    np.testing.assert_allclose(scorer.predict(test), pipeline.predict_proba(test)[:, 1], atol=1e-12)

    contributions = scorer.predict(test, pred_contrib=True)
    assert contributions.shape == (500, 6)
    np.testing.assert_allclose(contributions.sum(axis=1), raw, atol=1e-9)
    assert np.allclose(contributions[:, 2], 0.0)  # the constant feature explains nothing
    # The baseline is the training rows' mean log-odds: their contributions average to zero.
    np.testing.assert_allclose(
        scorer.predict(x, pred_contrib=True)[:, :-1].mean(axis=0), 0, atol=1e-9
    )
    assert scorer.num_feature() == 5
