"""The async rate limiter: a thin wrapper that turns rules into one atomic Lua call and the reply into values.

All the logic that must be atomic lives in ``ratelimit/lua/*.lua`` (see their headers for the key layout and
the exact contract). This module builds KEYS / ARGV, reads the clock, and converts replies into
:class:`~ratelimit.rules.Decision` objects right at the call site.

It works with any client offering redis-py's ``register_script``: ``redis.asyncio.Redis`` or the embedded
``fakeredis.FakeAsyncRedis`` (which runs the same Lua through lupa). Redis Cluster is not supported: the keys
of one request (client and IP subjects) live in different hash slots.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from ratelimit.errors import InvalidRule, StorageError
from ratelimit.rules import HITS_HISTORY_SECONDS, Decision, Policy, Rule, RuleState

logger = logging.getLogger("ratelimit")


def _script_text(name: str) -> str:
    return resources.files("ratelimit").joinpath("lua", name).read_text(encoding="utf-8")


#: The unit operations as Lua functions; another package's script may embed them (see :class:`UnitCall`).
UNITS_LIBRARY = _script_text("lib_units.lua")
ACQUIRE_SCRIPT = UNITS_LIBRARY + "\n" + _script_text("acquire_units.lua")
TOUCH_SCRIPT = UNITS_LIBRARY + "\n" + _script_text("touch_units.lua")
EXTEND_SCRIPT = UNITS_LIBRARY + "\n" + _script_text("extend_units.lua")
REMOVE_SCRIPT = _script_text("remove_units.lua")

#: Added to every key's expiry. Redis counts TTLs on its own clock while scores use the caller's; a minute
#: of slack keeps a key alive as long as any node's clock says a member still counts.
KEY_EXPIRY_SLACK_MS = 60_000
HITS_HISTORY_MS = HITS_HISTORY_SECONDS * 1000


def _ceil_seconds(ms: int) -> int:
    """Whole seconds, rounded up, so a wait told to a client never ends before the real one."""
    return max(0, -(-ms // 1000))


def _window_ms(rule: Rule) -> int:
    return rule.window_seconds * 1000 if rule.window_seconds is not None else 0


def rule_spec(keys: Sequence[str], rules: Sequence[Rule]) -> tuple[tuple[str, ...], bytes]:
    """The distinct sets of ``rules`` (whose keys are ``keys``, one per rule) and the rules argument of
    ``lib_units.lua``: a flat JSON array of ``set, limit, window_ms`` per rule, ``set`` counting the
    distinct sets from 1."""
    sets: dict[str, int] = {}
    numbers: list[int] = []
    for key, rule in zip(keys, rules, strict=True):
        numbers += (sets.setdefault(key, len(sets) + 1), rule.limit, _window_ms(rule))
    return tuple(sets), json.dumps(numbers, separators=(",", ":")).encode()


class UnitCall(NamedTuple):
    """The KEYS and ARGV of one unit operation, for a script that embeds ``lib_units.lua``.

    A host script appends ``keys`` after its own KEYS and ``args`` after its own ARGV and calls the library
    function with those two offsets, so the operation shares the host's atomic call (the gateway decides
    admission and consumes the rate limits in one round trip). ``rules`` are the rules the call covers, in
    the order of ``keys``, for turning the reply into a :class:`~ratelimit.rules.Decision`. Arguments may
    be integers, text or their bytes (what Redis receives is the same). A named tuple: one is made for
    every request.
    """

    keys: tuple[str, ...]
    args: tuple[int | str | bytes, ...]
    rules: tuple[Rule, ...]


class RateLimiter:
    """Exact sliding-window and concurrency limits in Redis, checked and consumed all-or-nothing.

    A *unit* is one request (one session attempt), named by a unique ``unit_id``. :meth:`acquire` records it
    as a hit in every window rule and as a held unit in every concurrent rule, or records nothing at all.
    The concurrent units are given back with :meth:`release` (on every ending) and expire by themselves
    after ``hold_seconds`` unless :meth:`touch` extends them; :meth:`refund` undoes an acquire completely.

    :param redis: an async Redis client (``redis.asyncio.Redis`` or ``fakeredis.FakeAsyncRedis``).
    :param key_prefix: prepended to every key (see :meth:`key_for`).
    :param clock: seconds since the epoch; every script gets its time from here (tests inject one).
    """

    def __init__(self, redis: Any, *, key_prefix: str = "rl:", clock: Callable[[], float] = time.time) -> None:
        self._prefix = key_prefix
        self._clock = clock
        self._redis = redis
        # register_script computes the SHA once and re-loads the script after a SCRIPT FLUSH or a restart.
        self._acquire = redis.register_script(ACQUIRE_SCRIPT)
        self._touch = redis.register_script(TOUCH_SCRIPT)
        self._extend = redis.register_script(EXTEND_SCRIPT)
        self._remove = redis.register_script(REMOVE_SCRIPT)

    def key_for(self, rule: Rule) -> str:
        """The Redis key holding ``rule``'s ZSET: ``<prefix>hits:<subject>`` for every window of a subject,
        ``<prefix>concurrent:<subject>`` for its concurrent units."""
        return f"{self._prefix}{rule.store_name}:{rule.subject}"

    async def acquire(self, unit_id: str, rules: Sequence[Rule], *, hold_seconds: float) -> Decision:
        """Check every rule and, only when all admit, consume one hit / unit of each, in one atomic call.

        :param unit_id: a unique id for this request (reused by :meth:`touch`, :meth:`release`, :meth:`refund`).
        :param rules: the request's rules, e.g. from :func:`~ratelimit.rules.rules_for`; may be empty.
        :param hold_seconds: how long the concurrent units live unless touched or released first.
        :returns: the decision, with one state per rule in the given order. Repeating an acquire with the same
            unit id does not count the unit twice.
        :raises InvalidRule: on an empty unit id, a non-positive hold or two rules with the same policy and
            subject.
        :raises StorageError: when the store fails.
        """
        call = self.acquire_call(unit_id, rules, hold_seconds=hold_seconds)
        if call is None:
            return Decision(allowed=True, refused=None, retry_after_seconds=None, states=())
        reply = await self._call(self._acquire, list(call.keys), list(call.args))
        return self.decision(call, reply)

    def acquire_call(self, unit_id: str, rules: Sequence[Rule], *, hold_seconds: float) -> UnitCall | None:
        """The KEYS / ARGV of :meth:`acquire` for a script that embeds ``lib_units.lua`` (``units_check``,
        ``units_consume``, ``units_report``); None when there are no rules. Reads the clock now.

        :raises InvalidRule: as :meth:`acquire`.
        """
        rules = tuple(rules)
        self._check_unit(unit_id)
        hold_ms = self._hold_ms(hold_seconds)
        keys = self._keys(rules)
        if not keys:
            return None
        sets, spec = rule_spec(keys, rules)
        return UnitCall(sets, (self._now_ms(), unit_id, hold_ms, KEY_EXPIRY_SLACK_MS, spec), rules)

    def decision(self, call: UnitCall, reply: Any) -> Decision:
        """The decision in the reply of an acquire: ``[allowed, used_1, wait_1, refused_1, ...]``.

        :raises StorageError: when the reply does not have that shape.
        """
        try:
            if not isinstance(reply, list | tuple) or len(reply) != 1 + 3 * len(call.rules):
                raise ValueError("wrong shape")
            values = [int(value) for value in reply]
        except (TypeError, ValueError):
            raise StorageError(f"acquire script returned an unexpected reply: {reply!r}") from None
        return self._decision(call.rules, values)

    async def touch(self, unit_id: str, rules: Sequence[Rule], *, hold_seconds: float) -> None:
        """Set the expiry of the unit's concurrent holds to now + ``hold_seconds``.

        A unit that was already released or has expired is not brought back.

        :param unit_id: the id given to :meth:`acquire`.
        :param rules: the rules given to :meth:`acquire` (only the concurrent ones matter).
        :param hold_seconds: the new lifetime, counted from now.
        :raises StorageError: when the store fails.
        """
        call = self.touch_call(unit_id, rules, hold_seconds=hold_seconds)
        if call is not None:
            found = await self._call(self._touch, list(call.keys), list(call.args))
            if found != len(call.keys):
                logger.debug("touch of unit %s found it in %s of %d concurrent sets", unit_id, found, len(call.keys))

    def touch_call(self, unit_id: str, rules: Sequence[Rule], *, hold_seconds: float) -> UnitCall | None:
        """The KEYS / ARGV of :meth:`touch` (only the concurrent rules) for a script that embeds
        ``lib_units.lua`` (``units_touch``); None when no rule is concurrent. Reads the clock now.
        """
        self._check_unit(unit_id)
        hold_ms = self._hold_ms(hold_seconds)
        concurrent = tuple(rule for rule in rules if rule.policy is Policy.CONCURRENT)
        keys = self._keys(concurrent)
        if not keys:
            return None
        return UnitCall(tuple(keys), (self._now_ms(), unit_id, hold_ms, KEY_EXPIRY_SLACK_MS), concurrent)

    async def extend_many(self, calls: Sequence[UnitCall]) -> int:
        """Renew several units at once: each :meth:`touch_call` result's units get ``now + hold`` as their
        expiry unless it is already later; released or expired units are not brought back.

        One pipelined round trip; each renewal is atomic on its own, the batch is not (none needs the
        others). Returns how many concurrent sets held their unit, summed over the calls.

        :raises StorageError: when the store fails.
        """
        if not calls:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in calls:
                    await self._extend(keys=list(call.keys), args=list(call.args), client=pipe)
                replies = await pipe.execute()
        except RedisError as exc:
            raise StorageError(f"rate-limit store failed: {exc}") from exc
        return sum(int(reply) for reply in replies)

    async def release(self, unit_id: str, rules: Sequence[Rule]) -> None:
        """Give the unit's concurrent holds back; the window hits stay. Idempotent.

        :param unit_id: the id given to :meth:`acquire`.
        :param rules: the rules given to :meth:`acquire`.
        :raises StorageError: when the store fails.
        """
        await self._remove_unit(unit_id, [rule for rule in rules if rule.policy is Policy.CONCURRENT])

    async def refund(self, unit_id: str, rules: Sequence[Rule]) -> None:
        """Undo an acquire completely (hits and holds), for a request that never happened. Idempotent.

        :param unit_id: the id given to :meth:`acquire`.
        :param rules: the rules given to :meth:`acquire`.
        :raises StorageError: when the store fails.
        """
        await self._remove_unit(unit_id, list(rules))

    async def _remove_unit(self, unit_id: str, rules: Sequence[Rule]) -> None:
        self._check_unit(unit_id)
        # Each set once (a subject's windows share one), with how long it keeps a member.
        kept = dict(zip(self._keys(rules), (HITS_HISTORY_MS if rule.policy.is_window else 0 for rule in rules),
                        strict=True))
        if kept:
            args: list[int | str] = [self._now_ms(), unit_id, KEY_EXPIRY_SLACK_MS, *kept.values()]
            await self._call(self._remove, list(kept), args)

    def _decision(self, rules: Sequence[Rule], reply: list[int]) -> Decision:
        allowed = reply[0] == 1
        states: list[RuleState] = []
        refused: Rule | None = None
        retry_after: int | None = None
        for index, rule in enumerate(rules):
            used, wait_ms, rule_refused = reply[1 + 3 * index: 4 + 3 * index]
            wait = _ceil_seconds(wait_ms)
            states.append(RuleState(rule=rule, used=used, remaining=max(0, rule.limit - used), reset_seconds=wait))
            # For a window the wait is exact: the moment enough hits leave it, so a retry then cannot be
            # refused by this rule unless other requests take the room first. For a concurrent rule it is
            # the moment enough held units would lapse by themselves as things stand: a session that ends
            # earlier frees room sooner, but a unit can also be held longer (a waiting request's unit is
            # renewed while it waits; a session's runs for the session lease from its start), and when a
            # session will end is not known to anyone. It is the best estimate there is, not a promise.
            if rule_refused and (retry_after is None or wait > retry_after):
                refused, retry_after = rule, wait
        if not allowed and refused is None:
            raise StorageError("acquire script refused without naming a refusing rule")
        if refused is not None:
            logger.debug("rate limit refused %s %s (retry after %s s)", refused.policy, refused.subject, retry_after)
        return Decision(allowed=allowed, refused=refused, retry_after_seconds=retry_after, states=tuple(states))

    def _keys(self, rules: Sequence[Rule]) -> list[str]:
        keys = []
        for rule in rules:
            if not isinstance(rule, Rule):
                raise InvalidRule(f"expected a Rule, got {rule!r}")
            keys.append(self.key_for(rule))
        if len({(rule.policy, rule.subject) for rule in rules}) != len(keys):
            raise InvalidRule("two rules share a policy and subject; each would count the request twice")
        return keys

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    @staticmethod
    def _hold_ms(hold_seconds: float) -> int:
        if isinstance(hold_seconds, bool) or not isinstance(hold_seconds, int | float) or not (
            math.isfinite(hold_seconds) and hold_seconds > 0
        ):
            raise InvalidRule(f"hold_seconds must be a positive number, got {hold_seconds!r}")
        return max(1, math.ceil(hold_seconds * 1000))

    @staticmethod
    def _check_unit(unit_id: str) -> None:
        if not isinstance(unit_id, str) or not unit_id:
            raise InvalidRule("unit_id must be a non-empty string")

    @staticmethod
    async def _call(script: Any, keys: list[str], args: list[int | str]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise StorageError(f"rate-limit store failed: {exc}") from exc
