"""The edge stream's write queues behave as the deques Tornado made them, and stay cheap when long (a
future per write queued for a client that reads slowly)."""

from __future__ import annotations

import collections
import random

import pytest

from gateway.http.connections import _ShortQueue


def test_it_does_what_tornado_asks_of_a_deque_in_any_order() -> None:
    rng = random.Random(7)
    ours, theirs = _ShortQueue(), collections.deque()
    for step in range(20_000):
        op = rng.random()
        if op < 0.55:
            ours.append(step)
            theirs.append(step)
        elif op < 0.95 and theirs:
            assert ours.popleft() == theirs.popleft()
        elif op < 0.97:
            ours.clear()
            theirs.clear()
        assert len(ours) == len(theirs) and bool(ours) == bool(theirs)
        assert list(ours) == list(theirs)
        if theirs:
            assert ours[0] == theirs[0] and ours[-1] == theirs[-1]


def test_an_empty_one_refuses_as_a_deque_does() -> None:
    queue = _ShortQueue()
    with pytest.raises(IndexError):
        queue.popleft()
    with pytest.raises(IndexError):
        queue[0]
    with pytest.raises(IndexError):
        queue[-1]


def test_draining_a_long_one_never_keeps_more_than_twice_what_it_holds() -> None:
    queue = _ShortQueue()
    for i in range(100_000):
        queue.append(i)
    for i in range(100_000):
        assert queue.popleft() == i
        # The dead head is dropped once it is half the list: each pop costs O(1) amortised, not a move
        # of everything behind it.
        assert len(queue._items) <= 2 * len(queue) + 1
    assert queue._items == [] and not queue
