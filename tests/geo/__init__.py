"""geo: client addresses behind trusted proxies and the MaxMind anonymizer checks."""
