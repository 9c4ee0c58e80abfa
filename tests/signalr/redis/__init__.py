"""signalr.redis: the backplane's envelope format and its hygiene."""
