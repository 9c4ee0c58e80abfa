"""Receiving for one hub connection: parse the client's bytes and route each message.

Most messages are handled synchronously inside the transport's own callback (see
:attr:`signalr.connections.inbox.Inbox.handler`); a message that has to wait (a full upload buffer, a full
replay buffer, an invocation that finds every slot taken) hands the rest of its batch to the receive
loop, which takes no more input until it has dispatched that batch: what the client sends meanwhile
stays in the connection's bounded inbox, then in the transport. A long batch also gives the event
loop a turn every :data:`DISPATCH_BATCH` messages, so one flooding client cannot starve the others.
:class:`MessageDispatch` is a mixin of :class:`signalr.hub_connection.HubConnection`: it works on
that object's state directly, because this path runs once per received message.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from signalr.errors import ProtocolError
from signalr.protocol import (
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
)
from signalr.protocol.messages import is_trackable

if TYPE_CHECKING:
    import asyncio

    from signalr.connections.connection import HttpConnection
    from signalr.hubs.hub import UploadStream
    from signalr.protocol.stateful import StatefulBuffer

log = logging.getLogger("signalr.hub")

#: A dispatch step's outcome: ``None`` (done), :data:`END` (the client sent Close) or something the
#: receive loop must await before the next message (a full upload buffer, a full replay buffer).
END = object()
Step: TypeAlias = "Awaitable[Any] | object | None"
NO_BACKLOG: tuple[Sequence[Any], int] = ((), 0)
#: Messages dispatched in a row before the receive loop lets other connections run.
DISPATCH_BATCH = 256


class _Yield:
    """A step that only gives the event loop one turn (a bare ``yield``, as ``asyncio.sleep(0)``)."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        yield


YIELD = _Yield()


def drop_step(step: Step | BaseException) -> None:
    """Forget a step that will not be awaited (the connection ended) without a "never awaited" warning."""
    if inspect.iscoroutine(step):
        step.close()


class MessageDispatch:
    """The receive loop and the per-message routing of a hub connection."""

    # State owned by HubConnection.__init__.
    connection_id: str
    connection: HttpConnection
    protocol: HubProtocol | None
    _clock: Callable[[], float]
    _last_received: float
    _stopped: bool
    _buffer: bytes
    _backlog: tuple[Sequence[HubMessage], int]
    _handoff: Step | BaseException
    _stateful: StatefulBuffer | None
    _space: asyncio.Event
    _streams: dict[str, asyncio.Task[None]]
    _cancelled_streams: set[str]
    _uploads: dict[str, UploadStream]

    if TYPE_CHECKING:  # provided by HubConnection and InvocationRunner; a runtime stub would shadow them

        def _close_after_protocol_error(self, exc: ProtocolError) -> None: ...

        def _on_invocation(self, message: InvocationMessage | StreamInvocationMessage) -> Step: ...

    async def _receive_loop(self, buffer: bytes) -> BaseException | None:
        assert self.protocol is not None
        inbox = self.connection.inbox
        self._buffer = b""
        data: bytes | None = buffer
        inbox.handler = self._receive_inline
        try:
            while True:
                if self._stopped:
                    # The connection ended: what it sent but we did not dispatch yet is dropped.
                    drop_step(self._handoff)
                    self._handoff = None
                    return None
                try:
                    if self._handoff is not None:
                        step, self._handoff = self._handoff, None
                        if await self._settle(step) is END:
                            return None
                    if data and await self._settle(self._consume(data)) is END:
                        return None
                except ProtocolError as exc:
                    log.warning("protocol error on connection %s: %s", self.connection_id, exc)
                    self._close_after_protocol_error(exc)
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

    def _consume(self, data: bytes) -> Step:
        """Parse ``data`` (after any leftover) and dispatch synchronously as far as possible."""
        assert self.protocol is not None
        messages, self._buffer = self.protocol.parse_messages(self._buffer + data if self._buffer else data)
        return self._dispatch_from(messages, 0)

    def _dispatch_from(self, messages: Sequence[HubMessage], start: int) -> Step:
        for index in range(start, len(messages)):
            if index - start == DISPATCH_BATCH:
                self._backlog = (messages, index)
                return YIELD
            step = self._dispatch(messages[index])
            if step is not None:
                if step is not END:
                    self._backlog = (messages, index + 1)
                return step
        return None

    async def _settle(self, step: Step | BaseException) -> Step:
        """Finish what :meth:`_consume` could not: await the stalled message, then dispatch the rest."""
        while step is not None and step is not END:
            if isinstance(step, BaseException):
                raise step
            await step
            if self._stopped:
                return END
            messages, start = self._backlog
            self._backlog = NO_BACKLOG
            step = self._dispatch_from(messages, start)
        return step

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, message: HubMessage) -> Step:
        """Handle one message without waiting; returns what must be awaited before the next one,
        ``END`` when the client closed, or ``None``."""
        if self._stateful is not None and is_trackable(message) and not self._stateful.accept_incoming():
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
                pass  # receiving anything at all resets the client timeout; a Ping needs no more
            case CloseMessage():
                log.debug("client closed connection %s (error=%s)", self.connection_id, message.error)
                return END
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
