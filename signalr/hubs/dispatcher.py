"""Receiving for one hub connection: parse the client's bytes and route each message.

Most messages are handled synchronously inside the transport's own callback (see
:attr:`signalr.connections.inbox.Inbox.handler`); a message that has to wait (a full upload buffer,
a full replay buffer, an invocation that finds every slot taken) hands the rest of its batch to the
receive loop, which takes no more input until it has dispatched that batch: what the client sends
meanwhile stays in the connection's bounded inbox, then in the transport. A long batch also gives the
event loop a turn every :data:`DISPATCH_BATCH` messages, so one flooding client cannot starve the others.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, TypeAlias

from signalr.connections.inbox import Inbox
from signalr.errors import ProtocolError
from signalr.hubs.heartbeat import Heartbeat
from signalr.hubs.invocations import Invocations
from signalr.hubs.output import HubOutput
from signalr.protocol import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    is_trackable,
)

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


class Dispatcher:
    """The receive loop and the per-message routing of one hub connection.

    :param connection_id: for logs.
    :param inbox: the connection's inbound bytes.
    :param output: the connection's output (its protocol parses, its replay buffer takes Acks).
    :param invocations: what runs the hub methods the client invokes.
    :param heartbeat: told when the client was last heard from.
    :param clock: monotonic time source.
    """

    __slots__ = (
        "_connection_id",
        "_inbox",
        "_protocol",
        "_stateful",
        "_output",
        "_invocations",
        "_heartbeat",
        "_clock",
        "_buffer",
        "_backlog",
        "_handoff",
    )

    def __init__(
        self,
        *,
        connection_id: str,
        inbox: Inbox,
        output: HubOutput,
        invocations: Invocations,
        heartbeat: Heartbeat,
        clock: Callable[[], float],
    ) -> None:
        self._connection_id = connection_id
        self._inbox = inbox
        self._protocol = output.protocol
        self._stateful = output.stateful
        self._output = output
        self._invocations = invocations
        self._heartbeat = heartbeat
        self._clock = clock
        # Unparsed tail of the input; a stalled batch's remaining messages; work handed from the
        # inline receive path to the receive loop.
        self._buffer = b""
        self._backlog: tuple[Sequence[HubMessage], int] = NO_BACKLOG
        self._handoff: Step | BaseException = None

    async def run(self, buffer: bytes) -> ProtocolError | None:
        """Dispatch ``buffer`` (what followed the handshake), then whatever the client sends, until it
        sends Close, its input ends, or it sends something unreadable (the error is returned)."""
        inbox = self._inbox
        invocations = self._invocations
        self._buffer = b""
        data: bytes | None = buffer
        inbox.handler = self._receive_inline
        try:
            while True:
                if invocations.stopped:
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
                    log.warning("protocol error on connection %s: %s", self._connection_id, exc)
                    return exc
                data = await inbox.receive()
                if data is None:
                    return None
                if data:
                    self._heartbeat.last_heard = self._clock()
        finally:
            inbox.handler = None

    def _receive_inline(self, data: bytes) -> None:
        """Bytes arriving while the receive loop is parked: handle them right here if possible."""
        self._heartbeat.last_heard = self._clock()
        try:
            step = self._consume(data)
        except Exception as exc:  # noqa: BLE001 - re-raised by the receive loop, as if it had parsed
            step = exc
        if step is not None:
            self._handoff = step
            self._inbox.interrupt()

    def _consume(self, data: bytes) -> Step:
        """Parse ``data`` (after any leftover) and dispatch synchronously as far as possible."""
        messages, self._buffer = self._protocol.parse_messages(self._buffer + data if self._buffer else data)
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
            await step  # type: ignore[misc]
            if self._invocations.stopped:
                return END
            messages, start = self._backlog
            self._backlog = NO_BACKLOG
            step = self._dispatch_from(messages, start)
        return step

    def _dispatch(self, message: HubMessage) -> Step:
        """Handle one message without waiting; returns what must be awaited before the next one,
        ``END`` when the client closed, or ``None``."""
        stateful = self._stateful
        if stateful is not None and is_trackable(message) and not stateful.accept_incoming():
            return None  # replayed duplicate after a re-attach
        match message:
            case InvocationMessage() | StreamInvocationMessage():
                return self._invocations.on_invocation(message)
            case StreamItemMessage():
                return self._invocations.on_stream_item(message)
            case CompletionMessage():
                self._invocations.on_completion(message)
            case CancelInvocationMessage():
                self._invocations.on_cancel(message)
            case PingMessage():
                pass  # receiving anything at all resets the client timeout; a Ping needs no more
            case CloseMessage():
                log.debug("client closed connection %s (error=%s)", self._connection_id, message.error)
                return END
            case AckMessage():
                self._output.acknowledge(message.sequence_id)
            case SequenceMessage():
                if stateful is not None:
                    stateful.sequence(message.sequence_id)
            case _:
                pass
        return None
