"""Tests of the pure-Python SignalR server (signalr/), layer by layer, then against real client libraries."""
