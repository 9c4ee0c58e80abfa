"""The Redis backplane's pub/sub side: which channels a server subscribes to, and the listener.

A server needs ``…:all``, ``…:internal:groups`` and its own ``…:internal:ack:<server>`` always. In the
per-target layout it also needs ``…:connection:<id>`` for each local connection and ``…:group:<g>`` while
``g`` has a local member; in the shared layout only ``…:groups`` and ``…:connections``, fixed.
:class:`RedisSubscriptions` keeps the subscription set equal to that, reads every message on one
dedicated connection and hands it to a callback. When Redis drops, it goes offline (no reconnect is
visible to callers), waits with capped exponential backoff and re-subscribes to whatever is needed then.
With sharded pub/sub (a Redis Cluster) it does the same with ``SSUBSCRIBE``; when the node stops serving the
channels' slot (a failover, a migration) Redis unsubscribes them by itself, and the listener takes that as a
lost connection: it reconnects, and the new connection finds the slot's new owner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from signalr.hubs.lifetime import LocalConnections
from signalr.redis.acks import fail_unawaited
from signalr.redis.protocol import BackplaneChannels, BackplaneLayout

__all__ = ["RedisSubscriptions", "reconnect_delay"]

# The lifetime manager logs under the same name, so one logger controls the whole backplane.
logger = logging.getLogger("signalr.lifetime.redis")


#: How long after the first unasked-for confirmation a quiet re-subscription is reported.
QUIET_RESUBSCRIBE_SETTLE_SECONDS = 0.1


def reconnect_delay(attempt: int, *, initial: float, cap: float) -> float:
    """Seconds to wait before reconnect attempt number ``attempt`` (0-based): doubling, capped."""
    if attempt <= 0:
        return min(initial, cap)
    # Clamp the exponent: a huge attempt count would overflow the float, and 64 doublings pass any cap.
    return min(cap, initial * (2 ** min(attempt, 64)))


class RedisSubscriptions:
    """One server's pub/sub connection, kept subscribed to the channels its local state needs.

    :param channels: the backplane's channel names.
    :param server_id: this server's id; its ack channel is always subscribed.
    :param local: the registry of local connections and groups the subscriptions mirror.
    :param on_message: called with ``(channel, data)`` for every published message, on the listener task.
    :param confirm_timeout: seconds :meth:`sync` waits for Redis to confirm a subscription change.
    :param reconnect_initial: first delay, in seconds, before re-subscribing after Redis dropped.
    :param reconnect_max: cap of the doubling reconnect delay, in seconds.
    :param sharded: ``SSUBSCRIBE``/``SUNSUBSCRIBE`` (sharded pub/sub) instead of ``SUBSCRIBE``/``UNSUBSCRIBE``.
    :param layout: per target (a channel per local connection and group) or shared (fixed channels).
    """

    def __init__(
        self,
        channels: BackplaneChannels,
        server_id: str,
        local: LocalConnections,
        on_message: Callable[[str, bytes], None],
        *,
        confirm_timeout: float,
        reconnect_initial: float,
        reconnect_max: float,
        sharded: bool = False,
        on_resubscribed: Callable[[], None] | None = None,
        layout: BackplaneLayout = BackplaneLayout.PER_TARGET,
    ) -> None:
        self._channels = channels
        self._per_target = layout is BackplaneLayout.PER_TARGET
        self._on_resubscribed = on_resubscribed
        #: The connection was lost since the subscriptions were last confirmed (messages may be missed).
        self._lost = False
        self._quiet_resubscribe: asyncio.TimerHandle | None = None
        self._server_id = server_id
        self._local = local
        self._on_message = on_message
        self._confirm_timeout = confirm_timeout
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()
        # Keyed by (confirmation kind, channel): ("subscribe", c) or ("unsubscribe", c).
        self._confirmations: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._online = asyncio.Event()
        self._offline = asyncio.Event()
        self._offline.set()
        self._closing = False
        self._sharded = sharded
        # The reply kinds of the two flavours: a message, a subscription confirmed, one ended.
        self._kinds = ("smessage", "ssubscribe", "sunsubscribe") if sharded else ("message", "subscribe", "unsubscribe")

    @property
    def online(self) -> bool:
        """Whether the pub/sub connection is up and its subscriptions are confirmed."""
        return self._online.is_set()

    async def wait_online(self) -> None:
        await self._online.wait()

    async def wait_offline(self) -> None:
        await self._offline.wait()

    def stop_reconnecting(self) -> None:
        """Let the listener end at its next failure instead of reconnecting; cancel it to end it now."""
        self._closing = True
        if self._quiet_resubscribe is not None:
            self._quiet_resubscribe.cancel()
            self._quiet_resubscribe = None

    # -- which channels ----------------------------------------------------------------------------

    def _fixed_channels(self) -> list[str]:
        channels = self._channels
        fixed = [channels.all, channels.internal_groups, channels.ack(self._server_id)]
        return fixed if self._per_target else [*fixed, channels.groups, channels.connections]

    def _wants(self, channel: str) -> bool:
        channels = self._channels
        if not self._per_target:
            return channel in self._fixed_channels()
        if channel.startswith(channels.connection_prefix):
            return channel[len(channels.connection_prefix):] in self._local
        if channel.startswith(channels.group_prefix):
            return self._local.has_group(channel[len(channels.group_prefix):])
        return channel in (channels.all, channels.internal_groups, channels.ack(self._server_id))

    def _needed_channels(self) -> list[str]:
        channels = self._channels
        if not self._per_target:
            return self._fixed_channels()
        return [
            *self._fixed_channels(),
            *map(channels.connection, self._local.connection_ids()),
            *map(channels.group, self._local.group_names()),
        ]

    def _expect_confirmation(self, kind: str, channel: str) -> asyncio.Future[None]:
        key = (kind, channel)
        future = self._confirmations.get(key)
        if future is None or future.done():
            future = self._confirmations[key] = asyncio.get_running_loop().create_future()
        return future

    async def sync(self, channels: Iterable[str]) -> None:
        """Make the subscription to each channel match local state, and wait for Redis to confirm.

        Waiting for the confirmation makes "connected/joined" mean "reachable from every server" and
        "disconnected/left" mean "no longer subscribed" by the time the caller resumes.

        Never raises for Redis trouble: when offline, the reconnect subscribes to whatever is needed then.
        """
        waiters: list[asyncio.Future[None]] = []
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None:
                return
            to_add: list[str] = []
            to_drop: list[str] = []
            for channel in channels:
                wanted = self._wants(channel)
                if wanted and channel not in self._subscribed:
                    to_add.append(channel)
                elif not wanted and channel in self._subscribed:
                    to_drop.append(channel)
                elif (pending := self._confirmations.get(("subscribe" if wanted else "unsubscribe", channel))) \
                        is not None and not pending.done():
                    waiters.append(pending)
            try:
                if to_drop:
                    waiters.extend(self._expect_confirmation("unsubscribe", channel) for channel in to_drop)
                    self._subscribed.difference_update(to_drop)
                    await self._unsubscribe(pubsub, to_drop)
                if to_add:
                    waiters.extend(self._expect_confirmation("subscribe", channel) for channel in to_add)
                    self._subscribed.update(to_add)
                    await self._subscribe(pubsub, to_add)
            except (RedisError, OSError) as exc:
                logger.warning("Could not update Redis subscriptions (will resubscribe on reconnect): %s", exc)
                return
        if not waiters:
            return
        # asyncio.wait, not wait_for: a timeout must not cancel confirmation futures other callers share.
        done, pending = await asyncio.wait(waiters, timeout=self._confirm_timeout)
        if pending or any(future.cancelled() or future.exception() is not None for future in done):
            logger.warning("Redis did not confirm a subscription change; it is redone on reconnect")

    # -- listener --------------------------------------------------------------------------------

    async def listen_forever(self, client: Redis) -> None:
        """Subscribe through ``client`` and read messages until cancelled, reconnecting after failures."""
        attempt = 0
        while not self._closing:
            pubsub = client.pubsub()
            try:
                async with self._lock:
                    needed = self._needed_channels()
                    for channel in needed:
                        self._expect_confirmation("subscribe", channel)
                    self._subscribed = set(needed)
                    self._pubsub = pubsub
                    await self._subscribe(pubsub, needed)
                unconfirmed = set(needed)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = self._kind(message["type"])
                    channel = message["channel"].decode("utf-8", "replace")
                    if kind == "message":
                        self._on_message(channel, message["data"])
                    elif kind == "unsubscribe" and self._sharded and channel in self._subscribed \
                            and ("unsubscribe", channel) not in self._confirmations:
                        # Nobody asked: the node no longer serves the channel's slot.
                        raise ConnectionError(f"Redis ended the subscription to {channel} (its slot moved)")
                    elif kind in ("subscribe", "unsubscribe"):
                        if kind == "subscribe" and not unconfirmed and ("subscribe", channel) not in self._confirmations:
                            # Nobody asked: redis-py lost the connection, made a new one and subscribed
                            # again by itself (its retry policy), so this loop saw no failure.
                            self._resubscribed_quietly()
                        self._confirm(kind, channel)
                        if unconfirmed and kind == "subscribe":
                            unconfirmed.discard(channel)
                            if not unconfirmed:
                                attempt = 0
                                self._offline.clear()
                                self._online.set()
                                logger.info("Subscribed to the Redis backplane as %s", self._server_id)
                                if self._lost:
                                    self._lost = False
                                    if self._on_resubscribed is not None:
                                        self._on_resubscribed()
            except asyncio.CancelledError:
                self._go_offline()
                await self._close_pubsub(pubsub)
                raise
            except Exception as exc:  # the listener must outlive every failure; it is the backplane
                self._lost = True
                self._go_offline()
                await self._close_pubsub(pubsub)
                delay = reconnect_delay(attempt, initial=self._reconnect_initial, cap=self._reconnect_max)
                attempt += 1
                logger.warning(
                    "Lost the Redis backplane subscription (%s: %s); reconnecting in %.2f s",
                    type(exc).__name__, exc, delay,
                )
                await asyncio.sleep(delay)

    async def _subscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        await (pubsub.ssubscribe(*channels) if self._sharded else pubsub.subscribe(*channels))

    async def _unsubscribe(self, pubsub: PubSub, channels: list[str]) -> None:
        await (pubsub.sunsubscribe(*channels) if self._sharded else pubsub.unsubscribe(*channels))

    def _kind(self, reply_type: str) -> str:
        """``message``, ``subscribe`` or ``unsubscribe`` for the flavour in use; anything else as it is."""
        message, subscribe, unsubscribe = self._kinds
        return {message: "message", subscribe: "subscribe", unsubscribe: "unsubscribe"}.get(reply_type, reply_type)

    def _confirm(self, kind: str, channel: str) -> None:
        future = self._confirmations.pop((kind, channel), None)
        if future is not None and not future.done():
            future.set_result(None)

    def _resubscribed_quietly(self) -> None:
        # One call for the whole burst of confirmations, a moment later, when most of them are in.
        if self._quiet_resubscribe is not None or self._on_resubscribed is None:
            return

        def report() -> None:
            self._quiet_resubscribe = None
            logger.warning("The Redis pub/sub connection was made again by the client library; messages "
                           "sent meanwhile were missed")
            if self._on_resubscribed is not None:
                self._on_resubscribed()

        self._quiet_resubscribe = asyncio.get_running_loop().call_later(QUIET_RESUBSCRIBE_SETTLE_SECONDS, report)

    def _go_offline(self) -> None:
        self._online.clear()
        self._offline.set()
        self._pubsub = None
        self._subscribed = set()
        confirmations, self._confirmations = self._confirmations, {}
        for future in confirmations.values():
            fail_unawaited(future, ConnectionError("the Redis pub/sub connection was lost"))

    @staticmethod
    async def _close_pubsub(pubsub: PubSub) -> None:
        try:
            await pubsub.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("Error closing the Redis pub/sub connection: %s", exc)
