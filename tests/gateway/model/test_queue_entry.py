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
