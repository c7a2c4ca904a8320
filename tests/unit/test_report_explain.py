"""Each driver's sentence carries the same one number its bar shows, for every kind of feature."""

from __future__ import annotations

import numpy as np
import pytest

from reports.explain import _sentence, is_flag, points_text


@pytest.mark.parametrize(
    ("values", "levels"),
    [
        (np.repeat([0.0, 1.0], 200), None),  # yes/no
        (np.linspace(0, 600, 400), None),  # numeric
        (np.repeat([0.0, 1.0, 2.0, 3.0], 100), ("phone", "chat", "email", "sms")),  # category
    ],
    ids=["flag", "numeric", "category"],
)
def test_sentence_states_the_mean_absolute_effect_in_points(values, levels):
    rng = np.random.default_rng(0)
    effect = (values - values.mean()) / (values.std() or 1) * 0.02 + rng.normal(
        0, 0.002, values.size
    )
    _direction, sentence = _sentence(values, effect, levels)
    assert points_text(float(np.mean(np.abs(effect)))) in sentence
    # Exactly one number of points in the sentence: nothing a chart could disagree with.
    assert sentence.count("points") == 1


def test_yes_no_features_are_recognised():
    assert is_flag(np.array([0.0, 1.0, np.nan, 1.0]))
    assert not is_flag(np.array([0.0, 1.0, 2.0]))
