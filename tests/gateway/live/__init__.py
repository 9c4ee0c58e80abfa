"""gateway.live: the session hub, presence, positions, abandonment, store outages."""
