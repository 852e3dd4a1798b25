"""read_ahead: a background thread decodes the next block while this one is preprocessed."""

import threading

import pytest

from aurora_pipeline.ingest.read_ahead import read_ahead


def test_items_come_in_their_order():
    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))
    assert list(read_ahead([], depth=2)) == []


def test_the_items_are_made_in_another_thread():
    made_in = []

    def items():
        for i in range(3):
            made_in.append(threading.current_thread().name)
            yield i

    assert list(read_ahead(items())) == [0, 1, 2]
    assert set(made_in) == {"read-ahead"}


def test_an_error_while_producing_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise ValueError("block 3 is corrupt")

    got = []
    with pytest.raises(ValueError, match="block 3 is corrupt"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer_and_its_thread():
    made = []

    def items():
        for i in range(1000):
            made.append(i)
            yield i

    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="preprocessing failed"):
        for item in read_ahead(items(), depth=2):
            if item == 1:
                raise RuntimeError("preprocessing failed")
    assert len(made) <= 2 + 2 + 1  # the two consumed, at most depth held, one being made
    assert {t.ident for t in threading.enumerate() if t.name == "read-ahead"} - before == set()
