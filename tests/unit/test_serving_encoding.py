"""Serving rebuilds the training encoding from the model card alone: same matrix, row or frame path."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from features.encoding import ROW_LOOP_MAX_ROWS, CardEncoder, encode, fit_encoding
from serving.models import online_rates


def _frame(rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    channel = pl.Enum(["phone", "email", "chat"])
    return pl.DataFrame(
        {
            "wait_seconds": rng.exponential(100, rows),
            "transfers": rng.integers(0, 3, rows).astype(np.int32),
            "resolved": rng.integers(0, 2, rows).astype(np.int8),
            "channel": pl.Series(rng.choice(["phone", "email", "chat"], rows)).cast(channel),
            "agent": rng.choice(["a1", "a2", "a3"], rows),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(None)
        .otherwise(pl.col("wait_seconds"))
        .alias("wait_seconds"),
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col("agent"))
        .alias("agent"),
    )


def test_card_encoder_matches_the_training_encoder():
    train = _frame(200)
    names = ["wait_seconds", "transfers", "resolved", "channel", "agent"]
    encoding = fit_encoding(train, names, ["channel"])
    card = encoding.to_dict()
    encoder = CardEncoder(card["feature_names"], card["category_levels"])
    # Unseen category at serving time: missing (NaN), as in training.
    scored = _frame(50).with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("a9"))
        .otherwise(pl.col("agent"))
        .alias("agent")
    )
    expected = encode(scored, encoding)
    assert np.array_equal(encoder.encode(scored), expected, equal_nan=True)
    small = scored.head(ROW_LOOP_MAX_ROWS)
    assert np.array_equal(encoder.encode(small), expected[:ROW_LOOP_MAX_ROWS], equal_nan=True)
    assert np.isnan(encoder.encode(scored)[3, names.index("agent")])


def test_online_rates_apply_the_latest_rate_to_any_time():
    from features.rates import join_rates

    latest = pl.DataFrame(
        {
            "rate_table": ["agent", "intent", "channel", "global"],
            "key": ["a-1", "pricing", "phone", None],
            "label_known_at": [datetime(2026, 6, 1, tzinfo=UTC)] * 4,
            "outcomes": [10, 20, 30, 100],
            "conversions": [1, 5, 6, 12],
            "rate": [0.1, 0.25, 0.2, 0.12],
        }
    )
    contacts = pl.DataFrame(
        {
            "started_at": [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 9, 1, tzinfo=UTC)],
            "agent_id": ["a-1", "a-2"],
            "handled_by": ["agent", "agent"],
            "intent": ["pricing", "pricing"],
            "channel": ["phone", "chat"],
        }
    )
    joined = join_rates(contacts, online_rates(latest)).sort("started_at")
    early, late = joined["_rate_intent"].to_list()
    assert early == late and early is not None  # the same latest rate, before or after its time
    assert 0.12 < early < 0.25  # the key's rate, smoothed towards the global rate
    assert joined["_rate_agent"][1] == 0.12  # an agent without outcomes: the global rate
    assert joined["_rate_channel"][1] == 0.12


def test_an_enum_is_encoded_by_its_codes_only_when_its_categories_are_the_levels():
    frame = _frame(300).with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(None)
        .otherwise(pl.col("channel"))
        .alias("channel")
    )
    encoding = fit_encoding(frame, ["wait_seconds", "channel"], ["channel"])
    assert encoding.category_levels["channel"] == ("phone", "email", "chat")
    as_text = frame.with_columns(pl.col("channel").cast(pl.String))
    expected = encode(as_text, encoding)  # the string path: the levels' positions
    assert np.array_equal(encode(frame, encoding), expected, equal_nan=True)
    codes = expected[:, 1]
    assert np.isnan(codes).sum() == frame["channel"].null_count() > 0
    assert set(np.unique(codes[~np.isnan(codes)])) == {0.0, 1.0, 2.0}
    # Same values, the categories in another order: their codes are not the levels' positions.
    reordered = frame.with_columns(
        pl.col("channel").cast(pl.String).cast(pl.Enum(["chat", "phone", "email"]))
    )
    assert np.array_equal(encode(reordered, encoding), expected, equal_nan=True)
