"""Logging: the request id every line carries, the text and JSON formats, and the throttle that keeps
repeated warnings readable."""
