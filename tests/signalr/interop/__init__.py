"""The official JavaScript client (under Node) and the Python clients against the example hub."""
