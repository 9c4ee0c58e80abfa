"""Running invocations for one hub connection: inline calls, the worker, streams and uploads.

Non-streaming invocations run one at a time per connection in arrival order (ASP.NET's
``MaximumParallelInvocationsPerClient`` of 1); a plain function with nothing queued ahead of it runs
inline in the receive path. Streaming and upload invocations run as their own tasks.
:class:`InvocationRunner` is a mixin of :class:`signalr.hub_connection.HubConnection` for the same
reason as :class:`signalr.hub_dispatch.MessageDispatch`: it is on the per-invocation path.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from signalr import hub as hub_module
from signalr.errors import SerializationError
from signalr.hub import BindingError, Hub, HubError, HubMethod, HubMethodTable, UploadStream
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
    from signalr.hub_dispatch import Step

log = logging.getLogger("signalr.hub")

#: A plain invocation waiting for the worker; the last item is what an inline call already produced.
Queued: TypeAlias = "tuple[HubMethod, InvocationMessage, list[Any], Any]"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ready:
    """The outcome of a plain function that ran inline but whose Completion the worker sends."""

    value: Any = None
    error: Exception | None = None


class InvocationRunner:
    """Starts, queues and completes the invocations of a hub connection."""

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
    _invocations: deque[Queued] | None
    _invocation_running: bool
    _worker: asyncio.Task[None] | None
    _worker_waiter: asyncio.Future[None] | None
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
            arguments = merge_arguments(method, arguments, uploads)
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




def merge_arguments(method: HubMethod, wire: list[Any], uploads: list[UploadStream]) -> list[Any]:
    """Interleave wire arguments and upload streams in signature order."""
    wire_iter = iter(wire)
    upload_iter = iter(uploads)
    streams = set(method.stream_parameters)
    return [next(upload_iter) if name in streams else next(wire_iter) for name in method.parameter_order]
