"""The queue entry's stored shape, owned by one class: round trips, and damaged data refused."""

from __future__ import annotations

import pytest

from gateway.model.entry import DamagedEntry, QueueEntry
from gateway.model.request import SessionRequest
from tests.harness.stack import session_body


def entry() -> QueueEntry:
    request = SessionRequest.from_dict(session_body(clientIdentifier="alice", metadata={"note": "é\u2028"}))
    return QueueEntry(request=request, ip="2001:db8::7")


def test_an_entry_round_trips_through_data_and_json() -> None:
    original = entry()
    assert QueueEntry.from_data(original.to_data()) == original
    text = original.to_json()
    assert text.isascii()  # whatever the strings hold, the stored text encodes to bytes
    assert QueueEntry.from_json(text) == original
    assert QueueEntry.from_json(text.encode()) == original


@pytest.mark.parametrize("data", [
    None, [], "x", {}, {"ip": "1.2.3.4"}, {"request": {}, "ip": "1.2.3.4"},
    {"request": session_body(), "ip": 7}, {"request": session_body(transportType=9), "ip": "1.2.3.4"},
], ids=["none", "list", "text", "empty", "no-request", "empty-request", "ip-not-text", "invalid-request"])
def test_damaged_data_is_refused_with_one_error(data) -> None:
    with pytest.raises(DamagedEntry):
        QueueEntry.from_data(data)


def test_text_that_is_not_json_is_a_damaged_entry() -> None:
    with pytest.raises(DamagedEntry):
        QueueEntry.from_json(b"{not json")


def test_an_entry_keeps_the_time_it_arrived() -> None:
    stamped = QueueEntry(request=entry().request, ip="192.0.2.1", queued_at=1700000000.25)
    assert stamped.to_data()["queuedAt"] == 1700000000.25
    assert QueueEntry.from_json(stamped.to_json()).queued_at == 1700000000.25
    assert QueueEntry.queued_at_of(stamped.to_data()) == 1700000000.25


@pytest.mark.parametrize("stored", [None, "soon", True, float("nan")], ids=["absent", "text", "bool", "nan"])
def test_an_entry_stored_without_a_usable_time_still_reads(stored) -> None:
    data = entry().to_data()
    if stored is None:
        del data["queuedAt"]  # as a version before the time was recorded stored it
    else:
        data["queuedAt"] = stored
    read = QueueEntry.from_data(data)
    assert read.queued_at is None and read.ip == "2001:db8::7"
    assert QueueEntry.queued_at_of(data) is None
