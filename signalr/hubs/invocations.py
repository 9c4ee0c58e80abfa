"""Running invocations for one hub connection: inline calls, slots, streams and uploads.

At most ``HubOptions.maximum_parallel_invocations_per_client`` non-streaming invocations run at once
per connection (ASP.NET's default of 1 runs them one at a time, in arrival order). One that finds
every slot taken is not queued: it becomes the receive loop's step, so the loop (and with it the
transport, once the connection's small inbox fills) waits until a slot frees. A plain function run
while a slot is free runs inline in the receive path. Streaming and upload invocations run as their
own tasks beside the others. When the connection ends, everything running is cancelled.
:class:`InvocationRunner` is a mixin of :class:`signalr.hub_connection.HubConnection` for the same
reason as :class:`signalr.hub_dispatch.MessageDispatch`: it is on the per-invocation path.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signalr.hubs import hub as hub_module
from signalr.errors import SerializationError
from signalr.hubs.hub import BindingError, Hub, HubError, HubMethod, HubMethodTable, UploadStream
from signalr.options import HubOptions
from signalr.protocol import (
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

if TYPE_CHECKING:
    from signalr.hubs.dispatcher import Step

log = logging.getLogger("signalr.hub")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ready:
    """The outcome of a plain function that ran inline but whose Completion a task sends."""

    value: Any = None
    error: Exception | None = None


class _SlotWait:
    """The receive loop's step for an invocation that found every slot taken: awaiting it waits
    for a free slot, then starts the invocation (unless the connection ended meanwhile).

    Not a coroutine, so a step that is dropped unawaited (the connection ended) leaves no warning.
    """

    __slots__ = ("_runner", "_free", "_method", "_message", "_arguments")

    def __init__(
        self,
        runner: InvocationRunner,
        free: asyncio.Future[None],
        method: HubMethod,
        message: InvocationMessage,
        arguments: list[Any],
    ) -> None:
        self._runner = runner
        self._free = free
        self._method = method
        self._message = message
        self._arguments = arguments

    def __await__(self) -> Generator[Any, None, None]:
        yield from self._free.__await__()
        if not self._runner._stopped:
            self._runner._begin(self._method, self._message, self._arguments)


class InvocationRunner:
    """Starts, limits, completes and (when the connection ends) cancels the invocations of a hub connection."""

    # State owned by HubConnection.__init__.
    connection_id: str
    protocol: HubProtocol | None
    _methods: HubMethodTable
    _options: HubOptions
    _clock: Callable[[], float]
    _closing: bool
    _space: asyncio.Event
    _busy: int
    _last_received: float
    _stopped: bool
    _parallel: int
    _running: int
    _slot: asyncio.Future[None] | None
    _tasks: set[asyncio.Task[Any]]
    _streams: dict[str, asyncio.Task[None]]
    _cancelled_streams: set[str]
    _uploads: dict[str, UploadStream]

    if TYPE_CHECKING:  # provided by HubConnection; a runtime stub would shadow it

        def _new_hub(self) -> Hub: ...

        def _put(self, data: bytes, *, tracked: bool) -> None: ...

        def _write(self, message: HubMessage) -> None: ...

        async def _send(self, message: HubMessage) -> None: ...

    def _on_invocation(self, message: InvocationMessage | StreamInvocationMessage) -> Step:
        if self._stopped:
            return None  # the connection ended while its last batch was being dispatched
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
            if not streaming:
                return self._start_plain(method, message, arguments)
            uploads: list[UploadStream] = []
        else:
            uploads = [UploadStream(self._options.stream_buffer_capacity) for _ in message.stream_ids]
            for stream_id, upload in zip(message.stream_ids, uploads, strict=True):
                self._uploads[stream_id] = upload
            arguments = merge_arguments(method, arguments, uploads)
        loop = asyncio.get_running_loop()
        if streaming:
            assert invocation_id is not None
            task = loop.create_task(self._run_stream(method, invocation_id, arguments))
            self._streams[invocation_id] = task
            self._track(task)
        else:
            # Upload methods run beside the reader so their items can keep arriving.
            self._track(loop.create_task(self._run_invocation(method, message, arguments, uploads)))
        return None

    def _start_plain(self, method: HubMethod, message: InvocationMessage, arguments: list[Any]) -> Step:
        """Start a non-streaming invocation now if a slot is free; otherwise make the receive loop
        wait for one (and so stop taking input) instead of queueing the invocation."""
        if self._running < self._parallel:
            if method.is_sync:  # (what _begin does, spelled out on the hot path)
                self._invoke_inline(method, message, arguments)
            else:
                self._spawn(method, message, arguments, None)
            return None
        free = asyncio.get_running_loop().create_future()
        self._slot = free
        return _SlotWait(self, free, method, message, arguments)

    def _begin(self, method: HubMethod, message: InvocationMessage, arguments: list[Any]) -> None:
        if method.is_sync:
            # A slot is free: run it right here, as ASP.NET awaits a lone invocation inline.
            self._invoke_inline(method, message, arguments)
        else:
            self._spawn(method, message, arguments, None)

    def _spawn(self, method: HubMethod, message: InvocationMessage, arguments: list[Any], started: Any) -> None:
        """Run the rest of an invocation as a task that holds a slot until it has sent its Completion."""
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._run_invocation(method, message, arguments, [], started))
        self._track(task)
        task.add_done_callback(self._invocation_done)

    def _invocation_done(self, _: asyncio.Task[None]) -> None:
        self._running -= 1
        free = self._slot
        if free is not None and self._running < self._parallel:
            self._slot = None
            if not free.done():
                free.set_result(None)

    def _stop_invocations(self) -> None:
        """The connection ended: start nothing more, cancel what runs, release a waiting reader."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        free, self._slot = self._slot, None
        if free is not None and not free.done():
            free.set_result(None)
        for upload in self._uploads.values():
            upload.complete()
        # A reader waiting for the replay buffer to drain must not wait for an Ack that cannot come.
        self._space.set()

    def _invoke_inline(self, method: HubMethod, message: InvocationMessage, arguments: list[Any]) -> None:
        """Run a plain function's invocation synchronously and write its Completion at once.

        The Completion goes through a task instead when it cannot be written without waiting
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
            self._spawn(method, message, arguments, outcome if outcome is not None else _Ready(value=result))
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

    def _send_now(self, message: HubMessage) -> Step:
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

    def _fail(self, invocation_id: str | None, error: str) -> Step:
        if invocation_id:
            return self._send_now(CompletionMessage.with_error(invocation_id, error))
        return None

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




def merge_arguments(method: HubMethod, wire: list[Any], uploads: list[UploadStream]) -> list[Any]:
    """Interleave wire arguments and upload streams in signature order."""
    wire_iter = iter(wire)
    upload_iter = iter(uploads)
    streams = set(method.stream_parameters)
    return [next(upload_iter) if name in streams else next(wire_iter) for name in method.parameter_order]
