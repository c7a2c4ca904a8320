"""Batch scoring builds the next feature chunk in a second thread: same items, same order,
errors raised to the scorer, and the maker stops when the scorer stops."""

from __future__ import annotations

import threading
import time

import polars as pl
import pytest

from training.batch import built_ahead


def test_items_arrive_in_order_each_made_in_the_second_thread():
    makers = []

    def items():
        for i in range(5):
            makers.append(threading.current_thread().name)
            yield pl.DataFrame({"i": [i]})

    got = [frame["i"].item() for frame in built_ahead(items())]
    assert got == [0, 1, 2, 3, 4]
    assert set(makers) == {"cto-features-ahead"}


def test_the_makers_error_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield pl.DataFrame({"i": [0]})
        raise ValueError("chunk 1: broken")

    seen = []
    with pytest.raises(ValueError, match="chunk 1: broken"):
        for frame in built_ahead(items()):
            seen.append(frame["i"].item())
    assert seen == [0]


def test_the_maker_stops_when_the_consumer_stops():
    made = []

    def items():
        for i in range(1_000):
            made.append(i)
            yield pl.DataFrame({"i": [i]})

    ahead = built_ahead(items())
    assert next(ahead)["i"].item() == 0
    ahead.close()  # the scorer gave up (an error of its own, say)
    count = len(made)
    time.sleep(0.3)
    assert len(made) == count <= 3  # at most one ahead plus the one being handed over
    assert not any(t.name == "cto-features-ahead" for t in threading.enumerate())
