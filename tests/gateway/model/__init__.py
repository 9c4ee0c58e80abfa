"""gateway.model: the session request payload and the queue entry."""
