"""A lifetime manager that spans processes through Redis pub/sub (a scale-out backplane).

The default layout follows ASP.NET Core's Redis backplane:

* every server subscribes to ``…:all``, ``…:internal:groups`` and its own ``…:internal:ack:<server>``;
* a server subscribes to ``…:connection:<id>`` for each local connection and to ``…:group:<g>`` while
  ``g`` has at least one local member;
* sends reach local connections directly and publish only for the other servers, which drop
  messages carrying their own server id, so nothing is delivered twice;
* adding or removing a connection hosted elsewhere goes over ``…:internal:groups``; the owning server
  applies it, subscribes as needed and acks on the origin's ack channel.

The shared layout (``layout=BackplaneLayout.SHARED``, see :class:`~signalr.redis.protocol.BackplaneLayout`)
replaces the per-connection and per-group channels by two fixed ones, ``…:groups`` and ``…:connections``:
connecting, disconnecting, joining and leaving then cost no Redis command, and every server filters the
group sends it reads by its own members.

On a Redis Cluster (``sharded=True``) the same channels use sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``,
Redis 7): a message then stays on the shard that owns its channel's slot, where a plain ``PUBLISH`` would be
sent to every node of the cluster. The channels' prefix should carry a hash tag (``{app}:signalr``), so
that all of them live in one slot and one connection subscribes to all.

Redis pub/sub is at-most-once: while a server is cut off from Redis it misses what others publish.
An outage closes nothing: local delivery goes on, publishes are logged and dropped, and the listener
reconnects with capped exponential backoff and re-subscribes to every channel it needs; then
:meth:`RedisHubLifetimeManager.on_resubscribed` callbacks run, so the hub can resend what was missed.
Envelopes are described in :mod:`signalr.redis.protocol`, the subscription set and the listener
live in :mod:`signalr.redis.subscriptions`, and acks of group commands in :mod:`signalr.redis.acks`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from signalr.hubs.lifetime import (
    GroupActionError,
    HubConnectionSink,
    HubLifetimeManager,
    LocalConnections,
    exclusion_set,
    id_collection,
    invocation,
)
from signalr.redis.acks import PendingAcks
from signalr.redis.clients import RedisFactory, default_factory, without_credentials
from signalr.redis.protocol import (
    BackplaneChannels,
    BackplaneLayout,
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
from signalr.redis.subscriptions import RedisSubscriptions, reconnect_delay

__all__ = ["RedisHubLifetimeManager", "reconnect_delay"]

logger = logging.getLogger("signalr.lifetime.redis")

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
    :param sharded: sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``), for a Redis Cluster; every server of one
        backplane must agree (a sharded message never reaches a plain subscriber).
    :param layout: which channels carry group and connection sends; every server of one backplane must
        agree (a server of the other layout neither reads nor writes the same channels).
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
        sharded: bool = False,
        layout: BackplaneLayout = BackplaneLayout.PER_TARGET,
    ) -> None:
        if ack_timeout <= 0:
            raise ValueError(f"ack_timeout must be positive, got {ack_timeout!r}")
        self.server_id = server_id or f"{socket.gethostname()}_{secrets.token_hex(8)}"
        self.channels = BackplaneChannels(prefix=prefix, hub=hub_name)
        self._redis_url = redis_url
        self._factory = redis_factory or default_factory(redis_url, ack_timeout)
        self._ack_timeout = ack_timeout
        self._local = LocalConnections()
        self._subscriptions = RedisSubscriptions(
            self.channels, self.server_id, self._local, self._dispatch, confirm_timeout=ack_timeout,
            reconnect_initial=reconnect_initial_delay, reconnect_max=reconnect_max_delay, sharded=sharded,
            on_resubscribed=self._resubscribed, layout=layout,
        )
        self.layout = layout
        self._per_target = layout is BackplaneLayout.PER_TARGET
        self._resubscribe_callbacks: list[Callable[[], None]] = []
        self._sharded = sharded
        self._publisher: Redis | None = None
        self._subscriber: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks = PendingAcks()
        self._publish_failing = False
        # Publishes under way, which close() lets finish: one cut off by the clients closing would reconnect
        # on its own (the publisher retries once) and leave a connection nobody closes.
        self._publishing = 0
        self._published_all: asyncio.Event | None = None
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
        self._listener = asyncio.create_task(
            self._subscriptions.listen_forever(self._subscriber), name=f"signalr-backplane-{self.server_id}"
        )
        try:
            await asyncio.wait_for(self._subscriptions.wait_online(), self._ack_timeout)
        except TimeoutError:
            logger.error(
                "Redis backplane at %s is not reachable yet; delivering locally and retrying",
                without_credentials(self._redis_url),
            )

    async def close(self) -> None:
        """Stop listening, fail pending group commands, let publishes under way finish (for up to
        ``ack_timeout``) and close both Redis clients. Sends made from now on reach local connections only."""
        self._closing = True
        self._subscriptions.stop_reconnecting()
        tasks = [t for t in (self._listener, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        self._acks.fail_all("The Redis lifetime manager was closed")
        if self._publishing:
            self._published_all = asyncio.Event()
            try:
                await asyncio.wait_for(self._published_all.wait(), self._ack_timeout)
            except TimeoutError:
                logger.warning("Closing with %d publish(es) to Redis still under way", self._publishing)
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
        return self._subscriptions.online

    async def wait_online(self, timeout: float) -> None:
        """Wait until :attr:`online`; raises :class:`TimeoutError` after ``timeout`` seconds."""
        await asyncio.wait_for(self._subscriptions.wait_online(), timeout)

    async def wait_offline(self, timeout: float) -> None:
        """Wait until the listener has noticed that Redis is gone; raises :class:`TimeoutError`."""
        await asyncio.wait_for(self._subscriptions.wait_offline(), timeout)

    # -- connections and groups ------------------------------------------------------------------

    def local_connection(self, connection_id: str) -> HubConnectionSink | None:
        return self._local.get(connection_id)

    def on_resubscribed(self, callback: Callable[[], None]) -> None:
        self._resubscribe_callbacks.append(callback)

    def _resubscribed(self) -> None:
        logger.info("Backplane subscribed again: messages sent meanwhile were missed; resyncing")
        for callback in self._resubscribe_callbacks:
            try:
                callback()
            except Exception:
                logger.exception("A resubscribe callback failed")

    async def _follow(self, connection_id: str | None = None, groups: Iterable[str] = ()) -> None:
        """Make the subscriptions to this connection's and these groups' channels match local state, and
        wait for Redis to confirm; nothing to do in the shared layout, whose channels are fixed."""
        if self._per_target:
            channels = self.channels
            own = (channels.connection(connection_id),) if connection_id is not None else ()
            await self._subscriptions.sync([*own, *map(channels.group, groups)])

    async def on_connected(self, connection: HubConnectionSink) -> None:
        self._local.add(connection)
        await self._follow(connection.connection_id)

    async def on_disconnected(self, connection: HubConnectionSink) -> None:
        emptied = self._local.remove(connection.connection_id)
        await self._follow(connection.connection_id, emptied)

    async def add_to_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._local:
            self._local.join(connection_id, group)
            # Also when the group already had members: an earlier subscribe may still await its
            # confirmation, and a send right after this call returns must reach the connection.
            await self._follow(groups=(group,))
            return
        await self._remote_group_action(GroupAction.ADD, connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if connection_id in self._local:
            if self._local.leave(connection_id, group):
                await self._follow(groups=(group,))
            return
        await self._remote_group_action(GroupAction.REMOVE, connection_id, group)

    async def _remote_group_action(self, action: GroupAction, connection_id: str, group: str) -> None:
        what = (
            f"adding connection {connection_id!r} to group {group!r}"
            if action is GroupAction.ADD
            else f"removing connection {connection_id!r} from group {group!r}"
        )
        command_id, future = self._acks.expect()
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
            self._acks.discard(command_id)

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
        if not self._per_target:
            payload = self._envelope(method, message.message.arguments, connections=(connection_id,))
            await self._publish(self.channels.connections, payload)
            return
        payload = self._envelope(method, message.message.arguments)
        await self._publish(self.channels.connection(connection_id), payload)

    async def send_connections(self, connection_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        ids = list(dict.fromkeys(id_collection(connection_ids, "connection_ids")))
        remote = [cid for cid in ids if cid not in self._local]
        shared = not self._per_target  # one message for all of them: each server delivers to its own
        # Encoded before any local delivery, so arguments that cannot cross processes fail the whole call.
        payload = (self._envelope(method, message.message.arguments, connections=tuple(remote) if shared else ())
                   if remote else b"")
        self._local.deliver_to(ids, message)
        if remote and shared:
            await self._publish(self.channels.connections, payload)
            return
        for connection_id in remote:
            await self._publish(self.channels.connection(connection_id), payload)

    async def send_group(self, group: str, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        message = invocation(method, args)
        excluded = exclusion_set(exclude)
        shared = not self._per_target
        payload = self._envelope(method, message.message.arguments, exclude=frozenset(excluded),
                                 groups=(group,) if shared else ())
        self._local.deliver_group(group, message, excluded)
        await self._publish(self.channels.groups if shared else self.channels.group(group), payload)

    async def send_groups(self, groups: Collection[str], method: str, args: Sequence[Any]) -> None:
        message = invocation(method, args)
        ordered = list(dict.fromkeys(id_collection(groups, "groups")))
        payload = self._envelope(method, message.message.arguments, groups=tuple(ordered))
        self._local.deliver_groups(ordered, message)
        if not self._per_target:
            if ordered:
                await self._publish(self.channels.groups, payload)
            return
        for group in ordered:
            await self._publish(self.channels.group(group), payload)

    async def _publish(self, channel: str, payload: bytes) -> int | None:
        """Publish; return the receiver count, or ``None`` (logged) when Redis is unreachable."""
        if self._closing:
            logger.debug("Not publishing to %s: the lifetime manager is closing", channel)
            return None
        if self._publisher is None:
            raise RuntimeError("RedisHubLifetimeManager is not started")
        self._publishing += 1
        try:
            if self._sharded:
                receivers = await self._publisher.spublish(channel, payload)
            else:
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
        finally:
            self._publishing -= 1
            if not self._publishing and self._published_all is not None:
                self._published_all.set()
        if self._publish_failing:
            self._publish_failing = False
            logger.info("Publishing to Redis works again")
        return int(receivers)

    # -- incoming ------------------------------------------------------------------------------

    def _dispatch(self, channel: str, data: bytes) -> None:
        """Handle one pub/sub message; a bad message is logged and skipped, never fatal."""
        channels = self.channels
        try:
            if channel == channels.all:
                envelope = decode_invocation(data)
                if envelope.origin != self.server_id:
                    self._local.deliver_all(invocation(envelope.target, envelope.arguments), envelope.exclude)
            elif channel == channels.groups:
                envelope = decode_invocation(data)
                if envelope.origin == self.server_id or not envelope.groups:
                    return
                message = invocation(envelope.target, envelope.arguments)
                if len(envelope.groups) == 1:
                    self._local.deliver_group(envelope.groups[0], message, envelope.exclude)
                else:
                    self._local.deliver_groups(envelope.groups, message)
            elif channel == channels.connections:
                envelope = decode_invocation(data)
                if envelope.origin != self.server_id:
                    self._local.deliver_to(envelope.connections, invocation(envelope.target, envelope.arguments))
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
                self._acks.resolve(decode_ack(data).id)
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
        await self._follow(groups=(command.group,))
        await self._publish(self.channels.ack(command.origin), encode_ack(GroupAck(id=command.id)))
