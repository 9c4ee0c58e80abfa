"""A lifetime manager that spans processes through Redis pub/sub (a scale-out backplane).

The layout follows ASP.NET Core's Redis backplane:

* every server subscribes to ``…:all``, ``…:internal:groups`` and its own ``…:internal:ack:<server>``;
* a server subscribes to ``…:connection:<id>`` for each local connection and to ``…:group:<g>`` while
  ``g`` has at least one local member;
* sends reach local connections directly and publish only for the other servers, which drop
  messages carrying their own server id, so nothing is delivered twice;
* adding or removing a connection hosted elsewhere goes over ``…:internal:groups``; the owning server
  applies it, subscribes as needed and acks on the origin's ack channel.

Redis pub/sub is at-most-once: while a server is cut off from Redis it misses what others publish.
An outage closes nothing: local delivery goes on, publishes are logged and dropped, and the listener
reconnects with capped exponential backoff and re-subscribes to every channel it needs.
Envelopes are described in :mod:`signalr.backplane_protocol`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from signalr.backplane_protocol import (
    BackplaneChannels,
    BackplaneProtocolError,
    GroupAck,
    GroupAction,
    GroupCommand,
    InvocationEnvelope,
    decode_ack,
    decode_group_command,
    decode_invocation,
    encode_ack,
    encode_group_command,
    encode_invocation,
)
from signalr.lifetime import (
    GroupActionError,
    HubConnectionSink,
    HubLifetimeManager,
    LocalConnections,
    exclusion_set,
    id_collection,
    invocation,
)

__all__ = ["RedisHubLifetimeManager", "reconnect_delay"]

logger = logging.getLogger("signalr.lifetime.redis")

RedisFactory = Callable[[], Redis]


def reconnect_delay(attempt: int, *, initial: float, cap: float) -> float:
    """Seconds to wait before reconnect attempt number ``attempt`` (0-based): doubling, capped."""
    if attempt <= 0:
        return min(initial, cap)
    # Clamp the exponent: a huge attempt count would overflow the float, and 64 doublings pass any cap.
    return min(cap, initial * (2 ** min(attempt, 64)))


def _default_factory(redis_url: str, timeout: float) -> RedisFactory:
    def factory() -> Redis:
        # One quick retry rides over a connection the server closed while idle; anything longer is
        # the listener's job (capped backoff), and callers of publish must never wait seconds on it.
        return Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
        )

    return factory


def _mark_retrieved(future: asyncio.Future[None]) -> None:
    # Nobody may be waiting on this future any more; reading the exception stops asyncio from
    # logging "exception was never retrieved" at garbage collection.
    if future.done() and not future.cancelled():
        future.exception()


class RedisHubLifetimeManager(HubLifetimeManager):
    """A :class:`HubLifetimeManager` whose sends reach connections on every server sharing one Redis.

    :param redis_url: URL of the Redis server (``redis://host:port/db``).
    :param prefix: first part of every channel name; isolates applications sharing a Redis.
    :param hub_name: second part of every channel name; isolates hubs.
    :param server_id: unique id of this process on the backplane (default: host name plus random hex).
    :param ack_timeout: seconds to wait for another server to acknowledge a group change, and the
        socket timeout for Redis commands.
    :param redis_factory: builds a ``redis.asyncio.Redis`` client; called twice, once for publishing
        and once for the dedicated pub/sub connection (default: :meth:`Redis.from_url`).
    :param reconnect_initial_delay: first delay, in seconds, before re-subscribing after Redis dropped.
    :param reconnect_max_delay: cap of the doubling reconnect delay, in seconds.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "signalr",
        hub_name: str = "hub",
        server_id: str | None = None,
        ack_timeout: float = 5.0,
        redis_factory: RedisFactory | None = None,
        reconnect_initial_delay: float = 0.05,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        if ack_timeout <= 0:
            raise ValueError(f"ack_timeout must be positive, got {ack_timeout!r}")
        self.server_id = server_id or f"{socket.gethostname()}_{secrets.token_hex(8)}"
        self.channels = BackplaneChannels(prefix=prefix, hub=hub_name)
        self._redis_url = redis_url
        self._factory = redis_factory or _default_factory(redis_url, ack_timeout)
        self._ack_timeout = ack_timeout
        self._reconnect_initial = reconnect_initial_delay
        self._reconnect_max = reconnect_max_delay
        self._local = LocalConnections()
        self._publisher: Redis | None = None
        self._subscriber: Redis | None = None
        self._pubsub: PubSub | None = None
        self._subscribed: set[str] = set()
        # Keyed by (confirmation kind, channel): ("subscribe", c) or ("unsubscribe", c).
        self._confirmations: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._subscription_lock = asyncio.Lock()
        self._online = asyncio.Event()
        self._offline = asyncio.Event()
        self._offline.set()
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._command_ids = itertools.count(1)
        self._publish_failing = False
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the Redis clients and start listening.

        Waits up to ``ack_timeout`` for the first subscription; if Redis is not reachable by then the
        manager logs an error and keeps retrying in the background (local delivery works meanwhile).
        """
        if self._listener is not None:
            raise RuntimeError("RedisHubLifetimeManager.start() was already called")
        self._publisher = self._factory()
        self._subscriber = self._factory()
        self._listener = asyncio.create_task(self._listen_forever(), name=f"signalr-backplane-{self.server_id}")
        try:
            await asyncio.wait_for(self._online.wait(), self._ack_timeout)
        except TimeoutError:
            logger.error(
                "Redis backplane at %s is not reachable yet; delivering locally and retrying",
                self._redis_url,
            )

    async def close(self) -> None:
        """Stop listening, fail pending group commands and close both Redis clients."""
        self._closing = True
        tasks = [t for t in (self._listener, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        for future in self._acks.values():
            if not future.done():
                future.set_exception(GroupActionError("The Redis lifetime manager was closed"))
                _mark_retrieved(future)
        for client in (self._publisher, self._subscriber):
            if client is not None:
                try:
                    await client.aclose()
                except (RedisError, OSError) as exc:
                    logger.debug("Error closing a Redis client: %s", exc)
        self._publisher = self._subscriber = None

    @property
    def online(self) -> bool:
        """Whether the pub/sub connection is up and its subscriptions are confirmed."""
        return self._online.is_set()

    async def wait_online(self, timeout: float) -> None:
        """Wait until :attr:`online`; raises :class:`TimeoutError` after ``timeout`` seconds."""
        await asyncio.wait_for(self._online.wait(), timeout)

    async def wait_offline(self, timeout: float) -> None:
        """Wait until the listener has noticed that Redis is gone; raises :class:`TimeoutError`."""
        await asyncio.wait_for(self._offline.wait(), timeout)

    # -- connections and groups ------------------------------------------------------------------

    def local_connection(self, connection_id: str) -> HubConnectionSink | None:
        return self._local.get(connection_id)

    async def on_connected(self, connection: HubConnectionSink) -> None:
        self._local.add(connection)
        await self._sync_channels((self.channels.connection(connection.connection_id),))

    async def on_disconnected(self, connection: HubConnectionSink) -> None:
        emptied = self._local.remove(connection.connection_id)
        await self._sync_channels(
            [self.channels.connection(connection.connection_id), *map(self.channels.group, emptied)]
        )

    async def add_to_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._local:
            self._local.join(connection_id, group)
            # Also when the group already had members: an earlier subscribe may still await its
            # confirmation, and a send right after this call returns must reach the connection.
            await self._sync_channels((self.channels.group(group),))
            return
        await self._remote_group_action(GroupAction.ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._local:
            if self._local.leave(connection_id, group):
                await self._sync_channels((self.channels.group(group),))
            return
        await self._remote_group_action(GroupAction.REMOVE, connection_id, group)

    async def _remote_group_action(self, action: GroupAction, connection_id: str, group: str) -> None:
        what = (
            f"adding connection {connection_id!r} to group {group!r}"
            if action is GroupAction.ADD
            else f"removing connection {connection_id!r} from group {group!r}"
        )
        command_id = next(self._command_ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[command_id] = future
        try:
            payload = encode_group_command(
                GroupCommand(id=command_id, origin=self.server_id, action=action, group=group,
                             connection_id=connection_id)
            )
            if await self._publish(self.channels.internal_groups, payload) is None:
                raise GroupActionError(f"Failed {what}: the Redis backplane is unreachable")
            try:
                await asyncio.wait_for(future, self._ack_timeout)
            except TimeoutError:
                raise GroupActionError(
                    f"No server acknowledged {what} within {self._ack_timeout:g} s: the connection is not "
                    "connected to any server, or its server cannot reach Redis"
                ) from None
        finally:
            self._acks.pop(command_id, None)

    # -- sends -----------------------------------------------------------------------------------

    def _envelope(self, method: str, args: tuple[Any, ...], **fields: Any) -> bytes:
        return encode_invocation(InvocationEnvelope(origin=self.server_id, target=method, arguments=args, **fields))

    async def send_all(self, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        message = invocation(method, args)
        excluded = exclusion_set(exclude)
        # Encode before delivering locally so an argument that cannot cross processes fails the whole
        # call instead of reaching only this server's connections.
        payload = self._envelope(method, message.message.arguments, exclude=frozenset(excluded))
        self._local.deliver_all(message, excluded)
        await self._publish(self.channels.all, payload)

    async def send_connection(self, connection_id: str, method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        if connection_id in self._local:
            self._local.deliver_to((connection_id,), message)
            return
        payload = self._envelope(method, message.message.arguments)
        await self._publish(self.channels.connection(connection_id), payload)

    async def send_connections(self, connection_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        ids = list(dict.fromkeys(id_collection(connection_ids, "connection_ids")))
        remote = [cid for cid in ids if cid not in self._local]
        payload = self._envelope(method, message.message.arguments) if remote else b""
        self._local.deliver_to(ids, message)
        for connection_id in remote:
            await self._publish(self.channels.connection(connection_id), payload)

    async def send_group(self, group: str, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        message = invocation(method, args)
        excluded = exclusion_set(exclude)
        payload = self._envelope(method, message.message.arguments, exclude=frozenset(excluded))
        self._local.deliver_group(group, message, excluded)
        await self._publish(self.channels.group(group), payload)

    async def send_groups(self, groups: Collection[str], method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        ordered = list(dict.fromkeys(id_collection(groups, "groups")))
        payload = self._envelope(method, message.message.arguments, groups=tuple(ordered))
        self._local.deliver_groups(ordered, message)
        for group in ordered:
            await self._publish(self.channels.group(group), payload)

    async def _publish(self, channel: str, payload: bytes) -> int | None:
        """Publish; return the receiver count, or ``None`` (logged) when Redis is unreachable."""
        if self._publisher is None:
            raise RuntimeError("RedisHubLifetimeManager is not started, or already closed")
        try:
            receivers = await self._publisher.publish(channel, payload)
        except (RedisError, OSError) as exc:
            # Logged once per outage: a hub broadcasting during an outage would otherwise flood the log.
            if not self._publish_failing:
                self._publish_failing = True
                logger.error("Publishing to Redis failed; messages for other servers are dropped until "
                             "it is back: %s (channel %s)", exc, channel)
            else:
                logger.debug("Publishing to %s failed: %s", channel, exc)
            return None
        if self._publish_failing:
            self._publish_failing = False
            logger.info("Publishing to Redis works again")
        return int(receivers)

    # -- subscriptions ---------------------------------------------------------------------------

    def _wants(self, channel: str) -> bool:
        channels = self.channels
        if channel.startswith(channels.connection_prefix):
            return channel[len(channels.connection_prefix):] in self._local
        if channel.startswith(channels.group_prefix):
            return self._local.has_group(channel[len(channels.group_prefix):])
        return channel in (channels.all, channels.internal_groups, channels.ack(self.server_id))

    def _needed_channels(self) -> list[str]:
        channels = self.channels
        return [
            channels.all,
            channels.internal_groups,
            channels.ack(self.server_id),
            *map(channels.connection, self._local.connection_ids()),
            *map(channels.group, self._local.group_names()),
        ]

    def _expect_confirmation(self, kind: str, channel: str) -> asyncio.Future[None]:
        key = (kind, channel)
        future = self._confirmations.get(key)
        if future is None or future.done():
            future = self._confirmations[key] = asyncio.get_running_loop().create_future()
        return future

    async def _sync_channels(self, channels: Iterable[str]) -> None:
        """Make the subscription to each channel match local state, and wait for Redis to confirm.

        Waiting for the confirmation makes "connected/joined" mean "reachable from every server" and
        "disconnected/left" mean "no longer subscribed" by the time the caller resumes.

        Never raises for Redis trouble: when offline, the reconnect subscribes to whatever is needed then.
        """
        waiters: list[asyncio.Future[None]] = []
        async with self._subscription_lock:
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
                    await pubsub.unsubscribe(*to_drop)
                if to_add:
                    waiters.extend(self._expect_confirmation("subscribe", channel) for channel in to_add)
                    self._subscribed.update(to_add)
                    await pubsub.subscribe(*to_add)
            except (RedisError, OSError) as exc:
                logger.warning("Could not update Redis subscriptions (will resubscribe on reconnect): %s", exc)
                return
        if not waiters:
            return
        # asyncio.wait, not wait_for: a timeout must not cancel confirmation futures other callers share.
        done, pending = await asyncio.wait(waiters, timeout=self._ack_timeout)
        if pending or any(future.cancelled() or future.exception() is not None for future in done):
            logger.warning("Redis did not confirm a subscription change; it is redone on reconnect")

    # -- listener --------------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        attempt = 0
        while not self._closing:
            assert self._subscriber is not None
            pubsub = self._subscriber.pubsub()
            try:
                async with self._subscription_lock:
                    needed = self._needed_channels()
                    for channel in needed:
                        self._expect_confirmation("subscribe", channel)
                    self._subscribed = set(needed)
                    self._pubsub = pubsub
                    await pubsub.subscribe(*needed)
                unconfirmed = set(needed)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    channel = message["channel"].decode("utf-8", "replace")
                    if kind == "message":
                        self._dispatch(channel, message["data"])
                    elif kind in ("subscribe", "unsubscribe"):
                        self._confirm(kind, channel)
                        if unconfirmed and kind == "subscribe":
                            unconfirmed.discard(channel)
                            if not unconfirmed:
                                attempt = 0
                                self._offline.clear()
                                self._online.set()
                                logger.info("Subscribed to the Redis backplane as %s", self.server_id)
            except asyncio.CancelledError:
                self._go_offline()
                await self._close_pubsub(pubsub)
                raise
            except Exception as exc:  # the listener must outlive every failure; it is the backplane
                self._go_offline()
                await self._close_pubsub(pubsub)
                delay = reconnect_delay(attempt, initial=self._reconnect_initial, cap=self._reconnect_max)
                attempt += 1
                logger.warning(
                    "Lost the Redis backplane subscription (%s: %s); reconnecting in %.2f s",
                    type(exc).__name__, exc, delay,
                )
                await asyncio.sleep(delay)

    def _confirm(self, kind: str, channel: str) -> None:
        future = self._confirmations.pop((kind, channel), None)
        if future is not None and not future.done():
            future.set_result(None)

    def _go_offline(self) -> None:
        self._online.clear()
        self._offline.set()
        self._pubsub = None
        self._subscribed = set()
        confirmations, self._confirmations = self._confirmations, {}
        for future in confirmations.values():
            if not future.done():
                future.set_exception(ConnectionError("the Redis pub/sub connection was lost"))
                _mark_retrieved(future)

    @staticmethod
    async def _close_pubsub(pubsub: PubSub) -> None:
        try:
            await pubsub.aclose()
        except (RedisError, OSError) as exc:
            logger.debug("Error closing the Redis pub/sub connection: %s", exc)

    def _dispatch(self, channel: str, data: bytes) -> None:
        """Handle one pub/sub message; a bad message is logged and skipped, never fatal."""
        channels = self.channels
        try:
            if channel == channels.all:
                envelope = decode_invocation(data)
                if envelope.origin != self.server_id:
                    self._local.deliver_all(invocation(envelope.target, envelope.arguments), envelope.exclude)
            elif channel.startswith(channels.group_prefix):
                envelope = decode_invocation(data)
                if envelope.origin == self.server_id:
                    return
                group = channel[len(channels.group_prefix):]
                message = invocation(envelope.target, envelope.arguments)
                if envelope.groups:
                    self._local.deliver_groups(envelope.groups, message, only=group)
                else:
                    self._local.deliver_group(group, message, envelope.exclude)
            elif channel.startswith(channels.connection_prefix):
                envelope = decode_invocation(data)
                connection_id = channel[len(channels.connection_prefix):]
                self._local.deliver_to((connection_id,), invocation(envelope.target, envelope.arguments))
            elif channel == channels.internal_groups:
                self._on_group_command(decode_group_command(data))
            elif channel == channels.ack(self.server_id):
                future = self._acks.get(decode_ack(data).id)
                if future is not None and not future.done():
                    future.set_result(None)
        except BackplaneProtocolError as exc:
            logger.warning("Ignoring a malformed backplane message on %s: %s", channel, exc)
        except Exception:
            logger.exception("Failed to handle a backplane message on %s", channel)

    def _on_group_command(self, command: GroupCommand) -> None:
        if command.connection_id not in self._local:
            return  # another server owns it, or nobody does; only the owner answers
        # Applied here, in arrival order, so an add followed by a remove cannot be reordered.
        if command.action is GroupAction.ADD:
            self._local.join(command.connection_id, command.group)
        else:
            self._local.leave(command.connection_id, command.group)
        # Subscribing waits for a confirmation that this very listener must read, so finish elsewhere.
        task = asyncio.create_task(self._finish_group_command(command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_group_command(self, command: GroupCommand) -> None:
        await self._sync_channels((self.channels.group(command.group),))
        await self._publish(self.channels.ack(command.origin), encode_ack(GroupAck(id=command.id)))
