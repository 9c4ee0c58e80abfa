"""The Redis client: the connection factory (real or embedded), the fast script path, and the gate that
checks the server's version and holds requests while Redis is unreachable."""
