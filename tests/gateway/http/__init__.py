"""gateway.http: the HTTP contract, the edge under abuse, origins, leaving over HTTP."""
