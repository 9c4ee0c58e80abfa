"""Per-connection hub lifecycle: handshake (with timeout) → parse → dispatch loop → Close.

The transport layer hands us bytes through ``connection.inbox`` and drains ``connection.outbox``;
this module never touches a socket. It is also the lifetime manager's sink for the connection.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from signalr import hub as hub_module
from signalr.clients import GroupManager, HubCallerClients
from signalr.connection import HttpConnection
from signalr.errors import HandshakeError, ProtocolError, SerializationError
from signalr.hub import BindingError, Hub, HubCallerContext, HubError, HubMethod, HubMethodTable, UploadStream
from signalr.options import HubOptions, TransportType
from signalr.protocol import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    get_protocol,
    parse_handshake_request,
    select_protocol,
    write_handshake_response,
)
from signalr.stateful import StatefulBuffer, is_tracked

if TYPE_CHECKING:
    from signalr.lifetime import HubLifetimeManager, SerializedMessage

log = logging.getLogger("signalr.hub")

HANDSHAKE_CANCELED = "Handshake was canceled."

#: A dispatch step's outcome: ``None`` (done), :data:`_END` (the client sent Close) or something the
#: receive loop must await before the next message (a full upload buffer, a full replay buffer).
_END = object()
_Step: TypeAlias = "Awaitable[Any] | object | None"
#: A plain invocation waiting for the worker; the last item is what an inline call already produced.
_Queued: TypeAlias = "tuple[HubMethod, InvocationMessage, list[Any], Any]"
_NO_BACKLOG: tuple[Sequence[Any], int] = ((), 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ready:
    """The outcome of a plain function that ran inline but whose Completion the worker sends."""

    value: Any = None
    error: Exception | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _CloseRequest:
    error: str | None
    allow_reconnect: bool


class HubConnection:
    """Runs one client's hub session and receives broadcasts for it.

    :param connection: the transport-level connection.
    :param hub_class: the hub type; a fresh instance serves each invocation.
    :param methods: the hub's method table.
    :param options: endpoint options.
    :param lifetime: the lifetime manager (broadcasts, groups).
    :param user: whatever the endpoint's user provider returned.
    :param clock: monotonic time source used by keep-alive and timeouts.
    """

    def __init__(
        self,
        *,
        connection: HttpConnection,
        hub_class: type[Hub],
        methods: HubMethodTable,
        options: HubOptions,
        lifetime: HubLifetimeManager,
        user: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection_id = connection.connection_id
        self.connection = connection
        self._hub_class = hub_class
        self._methods = methods
        self._options = options
        self._lifetime = lifetime
        self._clock = clock
        self.protocol: HubProtocol | None = None
        self._binary = False
        self.context = HubCallerContext(
            connection_id=connection.connection_id,
            user=user,
            request=connection.request,
            abort=lambda: self.abort(error=None, allow_reconnect=False),
        )
        self._stateful: StatefulBuffer | None = None
        self._space = asyncio.Event()
        self._space.set()
        self._close_request: _CloseRequest | None = None
        self._closing = False
        now = clock()
        self._last_ping_sent = now
        self._last_received = now
        self._ping_received = False
        self._busy = 0
        # Unparsed tail of the input; a stalled batch's remaining messages; work handed from the
        # inline receive path to the receive loop.
        self._buffer = b""
        self._backlog: tuple[Sequence[HubMessage], int] = _NO_BACKLOG
        self._handoff: _Step | BaseException = None
        # Created on the first queued invocation: an idle connection then carries no deque and no task.
        self._invocations: deque[_Queued] | None = None
        self._invocation_running = False
        self._worker: asyncio.Task[None] | None = None
        self._worker_waiter: asyncio.Future[None] | None = None
        self._caller_clients: HubCallerClients | None = None
        self._group_manager: GroupManager | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._cancelled_streams: set[str] = set()
        self._uploads: dict[str, UploadStream] = {}
        self.finished = asyncio.Event()

    # -- sink used by the lifetime manager -------------------------------------------------

    def send_serialized(self, message: SerializedMessage) -> None:
        """Queue a pre-serialized broadcast; never blocks, never raises."""
        try:
            if self.protocol is None or self._closing:
                return
            self._put(message.bytes_for(self.protocol), tracked=True)
        except Exception:  # noqa: BLE001 - one bad connection must not break a broadcast
            log.exception("dropping broadcast for connection %s", self.connection_id)

    # -- output ------------------------------------------------------------------------------

    def _put(self, data: bytes, *, tracked: bool) -> None:
        if self._stateful is not None and tracked:
            self._stateful.record_outgoing(data)
            if self._stateful.over_limit:
                self._space.clear()
        self.connection.outbox.put(data, binary=self._binary)

    def _write(self, message: HubMessage) -> None:
        assert self.protocol is not None
        self._put(self.protocol.write_message(message), tracked=is_tracked(message))

    async def _send(self, message: HubMessage) -> None:
        """Send from our own tasks, waiting for Acks while the replay buffer is full."""
        while not self._space.is_set() and not self._closing:
            await self._space.wait()
        if not self._closing:
            self._write(message)

    # -- lifecycle ---------------------------------------------------------------------------

    def abort(self, *, error: str | None = None, allow_reconnect: bool = False) -> None:
        """End the connection from the server side, sending Close first."""
        if self._close_request is None:
            self._close_request = _CloseRequest(error=error, allow_reconnect=allow_reconnect)
        self.connection.inbox.feed_eof()

    async def run(self) -> None:
        """The whole session; returns when the connection is over."""
        self.connection.on_tick = self.tick
        self.connection.on_reattach = self._on_reattach
        try:
            leftover = await self._handshake()
            if leftover is None:
                return
            await self._session(leftover)
        finally:
            self._closing = True
            self._space.set()
            self.connection.outbox.close()
            self.finished.set()

    async def _handshake(self) -> bytes | None:
        buffer = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.handshake_timeout
        limit = self._options.maximum_receive_message_size
        while True:
            try:
                chunk = await asyncio.wait_for(self.connection.inbox.receive(), deadline - loop.time())
            except TimeoutError:
                log.info("handshake timed out for connection %s", self.connection_id)
                return self._handshake_failed(HANDSHAKE_CANCELED)
            if chunk is None:
                if self._close_request is not None:
                    return self._handshake_failed(HANDSHAKE_CANCELED)
                return None  # the client left first: send nothing
            buffer += chunk
            try:
                request, rest = parse_handshake_request(buffer, max_message_size=limit)
                if request is None:
                    continue
                protocol = select_protocol(
                    request,
                    protocols={n: p for n in self._options.protocols if (p := get_protocol(n, max_message_size=limit))},
                    transfer_formats=(
                        (TransferFormat.TEXT,)
                        if self.connection.transport is TransportType.SERVER_SENT_EVENTS
                        else (TransferFormat.TEXT, TransferFormat.BINARY)
                    ),
                )
            except HandshakeError as exc:
                log.info("bad handshake from connection %s: %s", self.connection_id, exc.detail or exc)
                text = str(exc)
                if self._options.enable_detailed_errors and exc.detail:
                    text = f"{text} {exc.detail}"
                return self._handshake_failed(text)
            break
        binary = protocol.transfer_format == TransferFormat.BINARY
        self.protocol = protocol
        self._binary = binary
        # Stateful reconnect only for clients that negotiated it AND speak protocol version 2;
        # older clients (and pysignalr/Java) must never see Ack/Sequence.
        stateful = (
            self.connection.stateful_reconnect
            and request.version >= 2
            and self.connection.transport is TransportType.WEBSOCKETS
        )
        self.connection.stateful_reconnect = stateful
        if stateful:
            self._stateful = StatefulBuffer(limit=self._options.stateful_reconnect_buffer_size)
        self.connection.outbox.put(write_handshake_response(), binary=binary)
        log.debug("connection %s handshake ok (%s v%s)", self.connection_id, protocol.name, request.version)
        return rest

    def _handshake_failed(self, error: str) -> None:
        self.connection.outbox.put(write_handshake_response(error=error), binary=False)
        return None

    def _new_hub(self) -> Hub:
        # The proxies hold no per-call state, so each connection builds them once, on first use.
        if self._caller_clients is None:
            self._caller_clients = HubCallerClients(self._lifetime, self.connection_id)
            self._group_manager = GroupManager(self._lifetime)
        hub = self._hub_class()
        hub.context = self.context
        hub.clients = self._caller_clients
        hub.groups = self._group_manager  # type: ignore[assignment]
        return hub

    async def _session(self, leftover: bytes) -> None:
        try:
            await self._lifetime.on_connected(self)
        except Exception:  # noqa: BLE001 - e.g. the backplane is unreachable: let the client retry
            log.exception("lifetime manager refused connection %s", self.connection_id)
            self._write(CloseMessage(error=hub_module.CONNECTION_ERROR, allow_reconnect=True))
            return
        exception: BaseException | None = None
        try:
            try:
                await self._new_hub().on_connected()
            except Exception as exc:  # noqa: BLE001 - reported to the client as a Close error
                log.exception("on_connected failed for connection %s", self.connection_id)
                exception = exc
                self._close_request = _CloseRequest(error=self._close_text(exc), allow_reconnect=False)
            else:
                exception = await self._receive_loop(leftover)
        finally:
            workers = [self._worker] if self._worker is not None else []
            for task in [*workers, *self._tasks]:
                task.cancel()
            for upload in self._uploads.values():
                upload.complete()
            await asyncio.gather(*workers, *self._tasks, return_exceptions=True)
            request = self._close_request
            if request is not None and self.protocol is not None:
                self._write(CloseMessage(error=request.error, allow_reconnect=request.allow_reconnect))
            self._closing = True
            self.connection.outbox.close()
            try:
                await self._lifetime.on_disconnected(self)
            except Exception:  # noqa: BLE001
                log.exception("lifetime manager failed to disconnect %s", self.connection_id)
            try:
                await self._new_hub().on_disconnected(exception)
            except Exception:  # noqa: BLE001
                log.exception("on_disconnected failed for connection %s", self.connection_id)
            log.debug("connection %s ended", self.connection_id)

    def _close_text(self, exc: BaseException) -> str:
        if isinstance(exc, HubError) or self._options.enable_detailed_errors:
            return f"{hub_module.CONNECTION_ERROR} {type(exc).__name__}: {exc}"
        return hub_module.CONNECTION_ERROR

    async def _receive_loop(self, buffer: bytes) -> BaseException | None:
        assert self.protocol is not None
        inbox = self.connection.inbox
        self._buffer = b""
        data: bytes | None = buffer
        inbox.handler = self._receive_inline
        try:
            while True:
                try:
                    if self._handoff is not None:
                        step, self._handoff = self._handoff, None
                        if await self._settle(step) is _END:
                            return None
                    if data and await self._settle(self._consume(data)) is _END:
                        return None
                except ProtocolError as exc:
                    log.warning("protocol error on connection %s: %s", self.connection_id, exc)
                    text = hub_module.CONNECTION_ERROR
                    if self._options.enable_detailed_errors:
                        text = f"{text} InvalidDataException: {exc}"
                    self._close_request = _CloseRequest(error=text, allow_reconnect=True)
                    return exc
                data = await inbox.receive()
                if data is None:
                    return None
                if data:
                    self._last_received = self._clock()
        finally:
            inbox.handler = None

    def _receive_inline(self, data: bytes) -> None:
        """Bytes arriving while the receive loop is parked: handle them right here if possible."""
        self._last_received = self._clock()
        try:
            step = self._consume(data)
        except Exception as exc:  # noqa: BLE001 - re-raised by the receive loop, as if it had parsed
            step = exc
        if step is not None:
            self._handoff = step
            self.connection.inbox.interrupt()

    def _consume(self, data: bytes) -> _Step:
        """Parse ``data`` (after any leftover) and dispatch synchronously as far as possible."""
        assert self.protocol is not None
        messages, self._buffer = self.protocol.parse_messages(self._buffer + data if self._buffer else data)
        return self._dispatch_from(messages, 0)

    def _dispatch_from(self, messages: Sequence[HubMessage], start: int) -> _Step:
        for index in range(start, len(messages)):
            step = self._dispatch(messages[index])
            if step is not None:
                if step is not _END:
                    self._backlog = (messages, index + 1)
                return step
        return None

    async def _settle(self, step: _Step | BaseException) -> _Step:
        """Finish what :meth:`_consume` could not: await the stalled message, then dispatch the rest."""
        while step is not None and step is not _END:
            if isinstance(step, BaseException):
                raise step
            await step
            messages, start = self._backlog
            self._backlog = _NO_BACKLOG
            step = self._dispatch_from(messages, start)
        return step

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, message: HubMessage) -> _Step:
        """Handle one message without waiting; returns what must be awaited before the next one,
        ``_END`` when the client closed, or ``None``."""
        if self._stateful is not None and is_tracked(message) and not self._stateful.accept_incoming():
            return None  # replayed duplicate after a re-attach
        match message:
            case InvocationMessage() | StreamInvocationMessage():
                return self._on_invocation(message)
            case StreamItemMessage():
                upload = self._uploads.get(message.invocation_id)
                if upload is None:
                    log.debug("item for unknown stream %s on %s", message.invocation_id, self.connection_id)
                elif not upload.offer(message.item):
                    return upload.put(message.item)
            case CompletionMessage():
                upload = self._uploads.pop(message.invocation_id, None)
                if upload is None:
                    log.debug("unexpected completion %s on %s", message.invocation_id, self.connection_id)
                else:
                    upload.complete(message.error)
            case CancelInvocationMessage():
                task = self._streams.get(message.invocation_id)
                if task is not None:
                    self._cancelled_streams.add(message.invocation_id)
                    task.cancel()
            case PingMessage():
                # The client-timeout clock only starts once the client has shown it pings.
                self._ping_received = True
            case CloseMessage():
                log.debug("client closed connection %s (error=%s)", self.connection_id, message.error)
                return _END
            case AckMessage():
                if self._stateful is not None:
                    self._stateful.ack(message.sequence_id)
                    if not self._stateful.over_limit:
                        self._space.set()
            case SequenceMessage():
                if self._stateful is not None:
                    self._stateful.sequence(message.sequence_id)
            case _:
                pass
        return None

    def _on_invocation(self, message: InvocationMessage | StreamInvocationMessage) -> _Step:
        target = message.target
        invocation_id = message.invocation_id
        streaming = isinstance(message, StreamInvocationMessage)
        method = self._methods.lookup(target)
        if method is None:
            log.info("connection %s invoked unknown method %r", self.connection_id, target)
            return self._fail(invocation_id, hub_module.unknown_method_error(target))
        if method.is_streaming != streaming:
            return self._fail(
                invocation_id, hub_module.streaming_kind_error(target, method_is_streaming=method.is_streaming)
            )
        try:
            arguments = method.bind(message.arguments)
        except BindingError as exc:
            log.info("binding failed for %r on %s: %s", target, self.connection_id, exc)
            detailed = self._options.enable_detailed_errors
            return self._fail(invocation_id, hub_module.binding_error(target, exc, detailed=detailed))
        if len(message.stream_ids) != len(method.stream_parameters):
            return self._fail(
                invocation_id,
                hub_module.stream_count_error(target, len(message.stream_ids), len(method.stream_parameters)),
            )
        if streaming and invocation_id in self._streams:
            return self._fail(invocation_id, hub_module.duplicate_invocation_error(invocation_id))
        if not message.stream_ids:
            if not streaming and method.is_sync and not self._invocation_running and not self._invocations:
                # Nothing ahead of it: run it right here, as ASP.NET awaits a lone invocation inline.
                self._invoke_inline(method, message, arguments)
                return None
            uploads: list[UploadStream] = []
        else:
            uploads = [UploadStream(self._options.stream_buffer_capacity) for _ in message.stream_ids]
            for stream_id, upload in zip(message.stream_ids, uploads, strict=True):
                self._uploads[stream_id] = upload
            arguments = _merge(method, arguments, uploads)
        loop = asyncio.get_running_loop()
        if streaming:
            assert invocation_id is not None
            task = loop.create_task(self._run_stream(method, invocation_id, arguments))
            self._streams[invocation_id] = task
            self._track(task)
        elif uploads:
            # Upload methods run beside the reader so their items can keep arriving.
            self._track(loop.create_task(self._run_invocation(method, message, arguments, uploads)))
        else:
            self._enqueue(method, message, arguments, None)
        return None

    def _enqueue(self, method: HubMethod, message: InvocationMessage, arguments: list[Any], started: Any) -> None:
        # One non-streaming invocation at a time per connection, in arrival order.
        if self._invocations is None:
            self._invocations = deque()
        self._invocations.append((method, message, arguments, started))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._invocation_worker())
        else:
            waiter, self._worker_waiter = self._worker_waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _invoke_inline(self, method: HubMethod, message: InvocationMessage, arguments: list[Any]) -> None:
        """Run a plain function's invocation synchronously and write its Completion at once.

        The Completion goes through the worker instead when it cannot be written without waiting
        (a full replay buffer: the receive loop must stay free to read the Ack that makes room) or
        when the function returned an awaitable.
        """
        self._busy += 1
        try:
            result = getattr(self._new_hub(), method.attribute)(*arguments)
        except Exception as exc:  # noqa: BLE001 - becomes the client-visible error text
            outcome: Any = _Ready(error=exc)
        else:
            outcome = result if inspect.isawaitable(result) else None
        finally:
            self._busy -= 1
            self._last_received = self._clock()
        if outcome is None and not message.invocation_id:
            return
        if outcome is not None or not self._space.is_set():
            self._enqueue(method, message, arguments, outcome if outcome is not None else _Ready(value=result))
            return
        self._send_result(message.invocation_id, result, message.target)  # type: ignore[arg-type]

    def _send_result(self, invocation_id: str, result: Any, target: str) -> None:
        """Write a successful Completion now (the replay buffer has room)."""
        if self._closing:
            return
        assert self.protocol is not None
        try:
            data = self.protocol.write_completion(invocation_id, result)
        except SerializationError as exc:
            log.error("result of %r on %s is not serializable: %s", target, self.connection_id, exc)
            error = hub_module.invocation_error(target, exc, detailed=self._options.enable_detailed_errors)
            self._write(CompletionMessage.with_error(invocation_id, error))
            return
        self._put(data, tracked=True)

    def _send_now(self, message: HubMessage) -> _Step:
        """Write ``message`` at once unless the replay buffer is full; then return the wait for it."""
        if self._closing:
            return None
        if not self._space.is_set():
            return self._send(message)
        self._write(message)
        return None

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail(self, invocation_id: str | None, error: str) -> _Step:
        if invocation_id:
            return self._send_now(CompletionMessage.with_error(invocation_id, error))
        return None

    async def _invocation_worker(self) -> None:
        assert self._invocations is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._invocations:
                self._worker_waiter = loop.create_future()
                await self._worker_waiter
            method, message, arguments, started = self._invocations.popleft()
            self._invocation_running = True
            try:
                await self._run_invocation(method, message, arguments, [], started)
            finally:
                self._invocation_running = False

    async def _run_invocation(
        self,
        method: HubMethod,
        message: InvocationMessage,
        arguments: list[Any],
        uploads: list[UploadStream],
        started: Any = None,
    ) -> None:
        """Run one invocation and send its Completion; ``started`` is what an inline call already
        produced (a :class:`_Ready` outcome or an awaitable), ``None`` to call the method here."""
        self._busy += 1
        outcome: CompletionMessage | None
        try:
            if started is None:
                result = getattr(self._new_hub(), method.attribute)(*arguments)
            elif type(started) is _Ready:
                if started.error is not None:
                    raise started.error
                result = started.value
            else:
                result = started
            if inspect.isawaitable(result):
                result = await result
            outcome = CompletionMessage.with_result(message.invocation_id, result) if message.invocation_id else None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - becomes the client-visible error text
            if not isinstance(exc, HubError):
                log.exception("hub method %r failed on connection %s", message.target, self.connection_id)
            error = hub_module.invocation_error(message.target, exc, detailed=self._options.enable_detailed_errors)
            outcome = CompletionMessage.with_error(message.invocation_id, error) if message.invocation_id else None
        finally:
            self._busy -= 1
            self._last_received = self._clock()
            for upload in uploads:
                upload.complete()
            for stream_id in message.stream_ids:
                self._uploads.pop(stream_id, None)
        if outcome is not None:
            await self._send_completion(outcome, message.target)

    async def _send_completion(self, outcome: CompletionMessage, target: str) -> None:
        try:
            await self._send(outcome)
        except SerializationError as exc:
            log.error("result of %r on %s is not serializable: %s", target, self.connection_id, exc)
            error = hub_module.invocation_error(target, exc, detailed=self._options.enable_detailed_errors)
            await self._send(CompletionMessage.with_error(outcome.invocation_id, error))

    async def _run_stream(self, method: HubMethod, invocation_id: str, arguments: list[Any]) -> None:
        generator = getattr(self._new_hub(), method.attribute)(*arguments)
        completion = CompletionMessage.empty(invocation_id)
        try:
            async for item in generator:
                await self._send(StreamItemMessage(invocation_id=invocation_id, item=item))
        except asyncio.CancelledError:
            if invocation_id not in self._cancelled_streams:
                raise
            # Client-requested cancel is not an error: finish with an empty Completion.
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, HubError):
                log.exception("stream %r failed on connection %s", method.name, self.connection_id)
            completion = CompletionMessage.with_error(
                invocation_id, hub_module.stream_error(exc, detailed=self._options.enable_detailed_errors)
            )
        finally:
            self._streams.pop(invocation_id, None)
            self._cancelled_streams.discard(invocation_id)
            await generator.aclose()
        await self._send(completion)

    # -- heartbeat & stateful reconnect -------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called every heartbeat: keep-alive Ping, client timeout, stateful Ack."""
        if self.protocol is None or self._closing:
            return
        if self._stateful is not None:
            due = self._stateful.ack_due(now)
            if due is not None:
                self._write(AckMessage(sequence_id=due))
        if self.connection.transport is TransportType.LONG_POLLING:
            return  # long polling is inherently keep-alive: no Pings, no ping timeout
        if self.connection.inactive_since is not None:
            return  # a stateful connection waiting for its client to re-attach
        if now - self._last_ping_sent >= self._options.keep_alive_interval:
            self._last_ping_sent = now
            self._write(PING)
        if (
            self._ping_received
            and self._busy == 0
            and now - self._last_received > self._options.client_timeout_interval
        ):
            log.info("client timeout on connection %s", self.connection_id)
            self.abort(error=hub_module.CONNECTION_ERROR, allow_reconnect=True)

    def _on_reattach(self) -> None:
        """A reconnecting WebSocket took over: Sequence first, then everything unacknowledged."""
        if self._stateful is None or self.protocol is None:
            return
        self.connection.outbox.clear()
        first, pending = self._stateful.replay()
        self.connection.outbox.put(self.protocol.write_message(SequenceMessage(sequence_id=first)), binary=self._binary)
        for data in pending:
            self.connection.outbox.put(data, binary=self._binary)
        self._last_received = self._clock()


def _merge(method: HubMethod, wire: list[Any], uploads: list[UploadStream]) -> list[Any]:
    """Interleave wire arguments and upload streams in signature order."""
    wire_iter = iter(wire)
    upload_iter = iter(uploads)
    streams = set(method.stream_parameters)
    return [next(upload_iter) if name in streams else next(wire_iter) for name in method.parameter_order]
