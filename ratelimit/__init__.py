"""Exact sliding-window and concurrency rate limits in Redis, checked and consumed all-or-nothing.

* :mod:`ratelimit.rules`: value objects (:class:`Rule`, :class:`Decision`) and :func:`rules_for`;
* :mod:`ratelimit.limiter`: :class:`RateLimiter`, one atomic Lua call per operation;
* :mod:`ratelimit.headers`: ``RateLimit-Policy`` / ``RateLimit`` / ``Retry-After`` values;
* :mod:`ratelimit.errors`: the exception tree.
"""

from ratelimit.errors import InvalidRule, RateLimitError, StorageError
from ratelimit.headers import rate_limit_headers
from ratelimit.limiter import RateLimiter, UnitCall
from ratelimit.rules import Decision, Policy, Rule, RuleState, refusal_message, rules_for

__all__ = [
    "Decision",
    "InvalidRule",
    "Policy",
    "RateLimitError",
    "RateLimiter",
    "Rule",
    "RuleState",
    "StorageError",
    "UnitCall",
    "rate_limit_headers",
    "refusal_message",
    "rules_for",
]
