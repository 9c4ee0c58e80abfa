"""CORS for the REST endpoints, as the original configured it: listed origins, any header, any method.

Pure functions over header values, so the policy is testable without a server. Browsers get CORS
headers only for an allowed origin; any other origin gets none (the browser then blocks the response).
CORS only hides answers: the routes that act (session request, leave, negotiate) also refuse a foreign
origin outright (:meth:`CorsPolicy.refuses`), or a page anywhere could make its visitors queue.
"""

from __future__ import annotations

from collections.abc import Iterable

PREFLIGHT_MAX_AGE_SECONDS = 600


class CorsPolicy:
    """``AllowedOrigins`` from the settings. ``*`` allows every origin."""

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        origins = [o.strip().rstrip("/") for o in allowed_origins if o.strip()]
        self._any = "*" in origins
        # Origins compare case-insensitively on scheme and host; a trailing slash in settings is a common slip.
        self._allowed = frozenset(o.lower() for o in origins if o != "*")

    def allows(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self._any or origin.rstrip("/").lower() in self._allowed

    def refuses(self, origin: str | None) -> bool:
        """True when a browser request comes from a page whose origin is not allowed.

        Requests without ``Origin`` (apps, servers, same-origin GETs) are not refused: the header is what
        tells a foreign page's request, which a browser sends with its visitor's IP, from a program's.
        """
        return bool(origin) and not self.allows(origin)

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response."""
        if not self.allows(origin):
            return {}
        assert origin is not None
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After, RateLimit, RateLimit-Policy, X-Request-Id"}

    def preflight_headers(self, origin: str | None, request_method: str | None, request_headers: str | None) -> dict[str, str]:
        """Headers for an ``OPTIONS`` preflight; empty when the origin is not allowed."""
        if not self.allows(origin) or not request_method:
            return {}
        assert origin is not None
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": request_method.strip().upper(),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
        }
        if request_headers:
            # "AllowAnyHeader": echo what the browser asks for.
            headers["Access-Control-Allow-Headers"] = request_headers
        return headers
