"""Table mode (`cto train --table`): label parsing, feature selection and the split."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from features.errors import CTOError
from training.table import label_expr, prepare_table


def _table(n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "visits": rng.integers(0, 10, n),
            "kind": rng.choice(["new", "returning"], n),
            "weekend": rng.random(n) < 0.3,
            "day": [date(2026, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 100, n)],
            "bought": np.where(rng.random(n) < 0.2, "TRUE", "FALSE"),
            "session_id": [f"s{i}" for i in range(n)],
        }
    )


def test_label_text_numbers_and_booleans_are_read_and_bad_values_named():
    frame = pl.DataFrame({"a": ["TRUE", "no", " Yes "], "b": [1, 0, 1], "c": [True, False, None]})
    assert frame.select(label_expr(frame, "a"))["a"].to_list() == [True, False, True]
    assert frame.select(label_expr(frame, "b"))["b"].to_list() == [True, False, True]
    bad = pl.DataFrame({"outcome": ["TRUE", "maybe"]})
    with pytest.raises(CTOError, match=r"outcome.*'maybe'"):
        label_expr(bad, "outcome")
    with pytest.raises(CTOError, match="not 0/1"):
        label_expr(pl.DataFrame({"n": [0, 2]}), "n")


def test_time_split_puts_the_latest_rows_in_test_and_excludes_label_time_and_exclusions():
    frame, features, categorical, method = prepare_table(
        _table(), "bought", "day", ["session_id"], seed=1
    )
    assert method == "time"
    assert features == ["visits", "kind", "weekend"]
    assert categorical == ["kind"]
    spans = frame.group_by("split").agg(
        pl.col("started_at").min().alias("lo"), pl.col("started_at").max().alias("hi")
    )
    by_split = {r["split"]: r for r in spans.to_dicts()}
    assert by_split["train"]["hi"] < by_split["valid"]["lo"]
    assert by_split["valid"]["hi"] < by_split["test"]["lo"]


def test_without_a_time_column_the_split_is_stratified_and_says_so():
    frame, *_, method = prepare_table(_table(), "bought", None, [], seed=1)
    assert method == "stratified_random"
    rates = frame.group_by("split").agg(pl.col("_label").mean())["_label"]
    assert rates.max() - rates.min() < 0.03
    shares = frame["split"].value_counts(normalize=True).sort("split")
    assert shares.filter(pl.col("split") == "train")["proportion"][0] == pytest.approx(
        0.7, abs=0.01
    )


def test_missing_columns_are_named():
    with pytest.raises(CTOError, match="'nope'"):
        prepare_table(_table(), "bought", "nope", [], seed=1)
