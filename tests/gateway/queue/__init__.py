"""gateway.queue: the dispatcher's failures, withdrawals, and client protection in the admission call."""
