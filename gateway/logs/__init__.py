"""Logging: the request id every line carries, and the throttle that keeps repeated warnings readable."""
