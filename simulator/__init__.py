"""A simulated Iqra platform for the demo and the tests: the initiate and billing API, a control API, the
audio WebSocket and the session-ended webhook sender. It is not part of the gateway."""
