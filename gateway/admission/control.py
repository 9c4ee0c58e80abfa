"""The operators' runtime controls, kept in Redis so that every process obeys them at once.

Two controls, both in one hash (:attr:`gateway.admission.keys.AdmissionKeys.control`): a pause of
dispatching (new requests queue even with free slots, and no claim takes anything) and an override of the
global cap. They are read by ``admit.lua`` and ``claim.lua`` inside the call that decides, so no process
acts on a stale copy and none needs to be told. Each change is written together with a line of the audit
trail (who, what, when) in one MULTI/EXEC.

A store reset (Redis restarted empty, flushed) forgets the controls like everything else: the gateway
then runs on its configured cap, unpaused. That is the safe side for a pause an operator forgot, and the
audit trail says what was set before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.admission.keys import AdmissionKeys
from gateway.model import jsonutil

#: Changes kept in the audit trail.
AUDIT_LENGTH = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class Controls:
    """What the operators set: whether dispatching is paused, and the cap override (``None``: none)."""

    paused: bool = False
    cap: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """Who made a change: the address the request came from and the name it gave (``X-Operator``), if any."""

    ip: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.ip})" if self.name else self.ip


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def controls_from(paused: bytes | str | None, cap: bytes | str | None) -> Controls:
    """The controls from the hash's two fields (as ``HMGET`` gives them); an unreadable cap counts as none."""
    cap_text = _text(cap)
    return Controls(paused=_text(paused) == "1", cap=int(cap_text) if cap_text and cap_text.isdigit() else None)


class ControlStore:
    """Reads and changes the controls; every change is logged in the audit trail.

    :param redis: the shared store's client.
    :param keys: the admission store's key names (the controls' hash).
    :param audit_key: the audit trail's list (:attr:`gateway.admission.keys.KeySpace.admin_audit`).
    :param clock: wall clock in seconds, for the audit trail.
    """

    def __init__(self, redis: aioredis.Redis, *, keys: AdmissionKeys, audit_key: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._key = keys.control
        self._audit_key = audit_key
        self._clock = clock

    async def read(self) -> Controls:
        paused, cap = await self._redis.hmget(self._key, "paused", "cap")
        return controls_from(paused, cap)

    async def pause(self, operator: Operator) -> Controls:
        return await self._change(operator, "pause", set_fields={"paused": "1"})

    async def resume(self, operator: Operator) -> Controls:
        return await self._change(operator, "resume", delete_fields=("paused",))

    async def set_cap(self, cap: int | None, operator: Operator) -> Controls:
        """Override the global cap with ``cap``, or (``None``) return to the configured or learned one."""
        if cap is None:
            return await self._change(operator, "capacity", delete_fields=("cap",), detail={"cap": None})
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"cap must be an int >= 0 or None, got {cap!r}")
        return await self._change(operator, "capacity", set_fields={"cap": str(cap)}, detail={"cap": cap})

    async def record(self, operator: Operator, action: str, detail: dict | None = None) -> None:
        """Add a change made elsewhere (a session ended, a request removed) to the audit trail."""
        async with self._redis.pipeline(transaction=True) as pipe:
            self._audit(pipe, operator, action, detail)
            await pipe.execute()

    async def audit_trail(self, limit: int = AUDIT_LENGTH) -> list[dict]:
        """The latest changes, newest first."""
        raw = await self._redis.lrange(self._audit_key, 0, max(0, limit - 1))
        trail = []
        for line in raw:
            try:
                trail.append(jsonutil.loads(line))
            except ValueError:
                continue  # a damaged line is skipped, not a reason to hide the rest
        return trail

    async def _change(self, operator: Operator, action: str, *, set_fields: dict[str, str] | None = None,
                      delete_fields: tuple[str, ...] = (), detail: dict | None = None) -> Controls:
        async with self._redis.pipeline(transaction=True) as pipe:
            if set_fields:
                pipe.hset(self._key, mapping=set_fields)
            if delete_fields:
                pipe.hdel(self._key, *delete_fields)
            self._audit(pipe, operator, action, detail)
            pipe.hmget(self._key, "paused", "cap")
            replies = await pipe.execute()
        return controls_from(*replies[-1])

    def _audit(self, pipe: aioredis.client.Pipeline, operator: Operator, action: str, detail: dict | None) -> None:
        line = {"time": self._clock(), "ip": operator.ip, "operator": operator.name, "action": action,
                **(detail or {})}
        pipe.lpush(self._audit_key, jsonutil.dumps_ascii(line))
        pipe.ltrim(self._audit_key, 0, AUDIT_LENGTH - 1)
