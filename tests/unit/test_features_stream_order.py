"""The pipeline's sorts use one packed Int128 key (customer hash, time, kind) and break its ties by
the sequence hash: the rows must come out exactly as sorted by the key list, ties and nulls too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features import pipeline
from features.errors import CTOError


def _events(n: int, seed: int) -> pl.DataFrame:
    """Events of a few customers crowded onto a few instants: many exact ties of time and kind."""
    rng = pl.int_range(n, eager=True).shuffle(seed=seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "customer_id": (rng % 7).cast(pl.String),
            "_t": [start + timedelta(microseconds=int(v) % 5) for v in rng],
            "_kind": (rng % 3).cast(pl.Int8),
            "_seq": rng,
        }
    ).with_columns(
        pl.col("customer_id").hash(seed=0).alias("_customer_hash"),
        pl.col("_seq").hash(seed=0).alias("_seq_hash"),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_packed_sort_key_orders_as_the_key_list(seed):
    events = _events(400, seed)
    # A null time sorts first within its customer, as the key list sorts it.
    events = events.with_columns(
        pl.when(pl.col("_seq") % 50 == 0).then(None).otherwise(pl.col("_t")).alias("_t")
    )
    packed = events.sort(
        pipeline._customer_then(pipeline._time_order("_t", pl.col("_kind"))), "_seq_hash"
    )
    listed = events.sort("_customer_hash", "_t", "_kind", "_seq_hash")
    assert_frame_equal(packed, listed)
    # Far apart instants (years and microseconds) keep their order too.
    spread = events.with_columns(
        pl.col("_t") + pl.duration(days=pl.col("_seq") % 4 * 1_500)  # up to ~12 years
    )
    assert_frame_equal(
        spread.sort(
            pipeline._customer_then(pipeline._time_order("_t", pl.col("_kind"))), "_seq_hash"
        ),
        spread.sort("_customer_hash", "_t", "_kind", "_seq_hash"),
    )


def test_a_span_the_key_cannot_hold_is_refused_as_a_span():
    # 2**62 microseconds (~146,000 years): the packed sort key overflows there; the batch must
    # still be refused with the span error (not fail in the sort, nor pass).
    micros = [0, 1 << 62]
    contacts = pl.DataFrame(
        {
            "contact_id": ["a", "b"],
            "customer_id": ["c1", "c2"],
            "started_at": pl.Series(micros).cast(pl.Datetime("us", "UTC")),
            "channel": ["phone", "email"],
            "direction": ["inbound", "inbound"],
            "intent": ["product_inquiry", "product_inquiry"],
        }
    )
    with pytest.raises(CTOError, match="span more than 17 years"):
        pipeline.build_features(contacts, pipeline._EMPTY_ORDERS, moment="arrival")
