"""The use cases: admitting or queueing a session request, serving the queue as slots free, the session
cap (configured or learned from the platform), client protection, and the events that tell the hub."""
