"""Running invocations for one hub connection: inline calls, slots, streams and uploads.

At most ``HubOptions.maximum_parallel_invocations_per_client`` non-streaming invocations run at once
per connection (ASP.NET's default of 1 runs them one at a time, in arrival order). One that finds
every slot taken is not queued: it becomes the receive loop's step, so the loop (and with it the
transport, once the connection's small inbox fills) waits until a slot frees. A plain function run
while a slot is free runs inline in the receive path. Streaming and upload invocations run as their
own tasks beside the others. When the connection ends, everything running is cancelled.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

from signalr.errors import SerializationError
from signalr.hubs import error_texts
from signalr.hubs.heartbeat import Heartbeat
from signalr.hubs.hub import HubActivator, HubError
from signalr.hubs.methods import BindingError, HubMethod, HubMethodTable
from signalr.hubs.output import HubOutput
from signalr.hubs.uploads import UploadStream, merge_arguments
from signalr.options import HubOptions
from signalr.protocol import (
    CancelInvocationMessage,
    CompletionMessage,
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)

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
        runner: Invocations,
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
        if not self._runner.stopped:
            self._runner._begin(self._method, self._message, self._arguments)


class Invocations:
    """Starts, limits, completes and (when the connection ends) cancels the invocations of one hub
    connection. Each ``on_*`` method handles one received message without waiting and returns what
    the receive loop must await before the next message, or ``None``.

    :param connection_id: for logs.
    :param methods: the hub's method table.
    :param options: endpoint options (parallelism, stream buffers, detailed errors).
    :param activator: builds the hub instance for each call.
    :param output: where Completions and stream items go.
    :param heartbeat: counts running invocations and when the client was last heard from.
    :param clock: monotonic time source.
    """

    __slots__ = (
        *("stopped", "_connection_id", "_methods", "_options", "_activator", "_output", "_heartbeat", "_clock"),
        *("_parallel", "_running", "_slot", "_tasks", "_streams", "_cancelled_streams", "_uploads"),
    )

    def __init__(
        self,
        *,
        connection_id: str,
        methods: HubMethodTable,
        options: HubOptions,
        activator: HubActivator,
        output: HubOutput,
        heartbeat: Heartbeat,
        clock: Callable[[], float],
    ) -> None:
        #: Set once the connection ended: nothing more starts.
        self.stopped = False
        self._connection_id = connection_id
        self._methods = methods
        self._options = options
        self._activator = activator
        self._output = output
        self._heartbeat = heartbeat
        self._clock = clock
        # Invocations holding a slot, and the receive loop's wait for a free one.
        self._parallel = options.maximum_parallel_invocations_per_client
        self._running = 0
        self._slot: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._cancelled_streams: set[str] = set()
        self._uploads: dict[str, UploadStream] = {}

    # -- received messages -------------------------------------------------------------------

    def on_invocation(self, message: InvocationMessage | StreamInvocationMessage) -> Awaitable[Any] | None:
        """Check an Invocation or StreamInvocation against the method table and start it."""
        if self.stopped:
            return None  # the connection ended while its last batch was being dispatched
        target = message.target
        invocation_id = message.invocation_id
        streaming = isinstance(message, StreamInvocationMessage)
        method = self._methods.lookup(target)
        if method is None:
            log.info("connection %s invoked unknown method %r", self._connection_id, target)
            return self._fail(invocation_id, error_texts.unknown_method_error(target))
        if method.is_streaming != streaming:
            return self._fail(
                invocation_id, error_texts.streaming_kind_error(target, method_is_streaming=method.is_streaming)
            )
        try:
            arguments = method.bind(message.arguments)
        except BindingError as exc:
            log.info("binding failed for %r on %s: %s", target, self._connection_id, exc)
            detailed = self._options.enable_detailed_errors
            return self._fail(invocation_id, error_texts.binding_error(target, exc, detailed=detailed))
        if len(message.stream_ids) != len(method.stream_parameters):
            return self._fail(
                invocation_id,
                error_texts.stream_count_error(target, len(message.stream_ids), len(method.stream_parameters)),
            )
        if streaming and invocation_id in self._streams:
            return self._fail(invocation_id, error_texts.duplicate_invocation_error(invocation_id))
        if not message.stream_ids and not streaming:
            return self._start_plain(method, message, arguments)  # type: ignore[arg-type]
        self._start_task(method, message, arguments)
        return None

    def on_stream_item(self, message: StreamItemMessage) -> Awaitable[None] | None:
        """One item of a client-to-server stream; waits while that stream's buffer is full."""
        upload = self._uploads.get(message.invocation_id)
        if upload is None:
            log.debug("item for unknown stream %s on %s", message.invocation_id, self._connection_id)
        elif not upload.offer(message.item):
            return upload.put(message.item)
        return None

    def on_completion(self, message: CompletionMessage) -> None:
        """The client ended one of its streams."""
        upload = self._uploads.pop(message.invocation_id, None)
        if upload is None:
            log.debug("unexpected completion %s on %s", message.invocation_id, self._connection_id)
        else:
            upload.complete(message.error)

    def on_cancel(self, message: CancelInvocationMessage) -> None:
        """The client no longer wants the items of one of its server-to-client streams."""
        task = self._streams.get(message.invocation_id)
        if task is not None:
            self._cancelled_streams.add(message.invocation_id)
            task.cancel()

    # -- the end of the connection -----------------------------------------------------------

    def stop(self) -> None:
        """The connection ended: start nothing more, cancel what runs, release a waiting reader."""
        self.stopped = True
        for task in list(self._tasks):
            task.cancel()
        free, self._slot = self._slot, None
        if free is not None and not free.done():
            free.set_result(None)
        for upload in self._uploads.values():
            upload.complete()
        # A reader waiting for the replay buffer to drain must not wait for an Ack that cannot come.
        self._output.release()

    async def wait(self) -> None:
        """Until every invocation task has finished (after :meth:`stop`: been cancelled)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- starting ----------------------------------------------------------------------------

    def _start_task(
        self, method: HubMethod, message: InvocationMessage | StreamInvocationMessage, arguments: list[Any]
    ) -> None:
        """Start a streaming invocation, or one that takes upload streams, as its own task."""
        uploads: list[UploadStream] = []
        if message.stream_ids:
            uploads = [UploadStream(self._options.stream_buffer_capacity) for _ in message.stream_ids]
            for stream_id, upload in zip(message.stream_ids, uploads, strict=True):
                self._uploads[stream_id] = upload
            arguments = merge_arguments(method, arguments, uploads)
        loop = asyncio.get_running_loop()
        if isinstance(message, StreamInvocationMessage):
            invocation_id = message.invocation_id
            assert invocation_id is not None
            task = loop.create_task(self._run_stream(method, invocation_id, arguments))
            self._streams[invocation_id] = task
            self._track(task)
        else:
            # Upload methods run beside the reader so their items can keep arriving.
            self._track(loop.create_task(self._run_invocation(method, message, arguments, uploads)))

    def _start_plain(
        self, method: HubMethod, message: InvocationMessage, arguments: list[Any]
    ) -> Awaitable[Any] | None:
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

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- running -----------------------------------------------------------------------------

    def _invoke_inline(self, method: HubMethod, message: InvocationMessage, arguments: list[Any]) -> None:
        """Run a plain function's invocation synchronously and write its Completion at once.

        The Completion goes through a task instead when it cannot be written without waiting
        (a full replay buffer: the receive loop must stay free to read the Ack that makes room) or
        when the function returned an awaitable.
        """
        heartbeat = self._heartbeat
        heartbeat.busy += 1
        try:
            result = getattr(self._activator.create(), method.attribute)(*arguments)
        except Exception as exc:  # noqa: BLE001 - becomes the client-visible error text
            outcome: Any = _Ready(error=exc)
        else:
            outcome = result if inspect.isawaitable(result) else None
        finally:
            heartbeat.busy -= 1
            heartbeat.last_heard = self._clock()
        if outcome is None and not message.invocation_id:
            return
        if outcome is not None or not self._output.room.is_set():
            self._spawn(method, message, arguments, outcome if outcome is not None else _Ready(value=result))
            return
        self._send_result(message.invocation_id, result, message.target)  # type: ignore[arg-type]

    def _send_result(self, invocation_id: str, result: Any, target: str) -> None:
        """Write a successful Completion now (the replay buffer has room)."""
        output = self._output
        if output.closing:
            return
        try:
            data = output.protocol.write_completion(invocation_id, result)
        except SerializationError as exc:
            log.error("result of %r on %s is not serializable: %s", target, self._connection_id, exc)
            error = error_texts.invocation_error(target, exc, detailed=self._options.enable_detailed_errors)
            output.write(CompletionMessage.with_error(invocation_id, error))
            return
        output.put(data, tracked=True)

    def _fail(self, invocation_id: str | None, error: str) -> Awaitable[None] | None:
        if invocation_id:
            return self._output.send_now(CompletionMessage.with_error(invocation_id, error))
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
        heartbeat = self._heartbeat
        heartbeat.busy += 1
        outcome: CompletionMessage | None
        try:
            if started is None:
                result = getattr(self._activator.create(), method.attribute)(*arguments)
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
                log.exception("hub method %r failed on connection %s", message.target, self._connection_id)
            error = error_texts.invocation_error(message.target, exc, detailed=self._options.enable_detailed_errors)
            outcome = CompletionMessage.with_error(message.invocation_id, error) if message.invocation_id else None
        finally:
            heartbeat.busy -= 1
            heartbeat.last_heard = self._clock()
            for upload in uploads:
                upload.complete()
            for stream_id in message.stream_ids:
                self._uploads.pop(stream_id, None)
        if outcome is not None:
            await self._send_completion(outcome, message.target)

    async def _send_completion(self, outcome: CompletionMessage, target: str) -> None:
        try:
            await self._output.send(outcome)
        except SerializationError as exc:
            log.error("result of %r on %s is not serializable: %s", target, self._connection_id, exc)
            error = error_texts.invocation_error(target, exc, detailed=self._options.enable_detailed_errors)
            await self._output.send(CompletionMessage.with_error(outcome.invocation_id, error))

    async def _run_stream(self, method: HubMethod, invocation_id: str, arguments: list[Any]) -> None:
        generator = getattr(self._activator.create(), method.attribute)(*arguments)
        completion = CompletionMessage.empty(invocation_id)
        try:
            async for item in generator:
                await self._output.send(StreamItemMessage(invocation_id=invocation_id, item=item))
        except asyncio.CancelledError:
            if invocation_id not in self._cancelled_streams:
                raise
            # Client-requested cancel is not an error: finish with an empty Completion.
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, HubError):
                log.exception("stream %r failed on connection %s", method.name, self._connection_id)
            completion = CompletionMessage.with_error(
                invocation_id, error_texts.stream_error(exc, detailed=self._options.enable_detailed_errors)
            )
        finally:
            self._streams.pop(invocation_id, None)
            self._cancelled_streams.discard(invocation_id)
            await generator.aclose()
        await self._output.send(completion)
