"""The HTTP edge and the REST routes: the server with its limits, the JSON base handler, the session,
status, leave and webhook handlers, CORS and the static files."""
