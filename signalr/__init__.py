"""signalr package."""
