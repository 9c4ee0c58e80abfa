"""signalr.protocol: framing, handshake, the JSON and MessagePack hub protocols (no I/O)."""
