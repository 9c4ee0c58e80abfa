"""Locust load test of an Iqra web-session gateway: simulated visitors that do what the widget does.

Each visitor asks for a voice session (``POST /api/session/request``). On ``200`` it opens the audio
WebSocket at once; on ``202`` it waits in the queue on ``/sessionHub`` (SignalR, JSON protocol over
WebSockets: negotiate, handshake, ``Register(uniqueRequestId)``, then ``QueuePositionUpdated`` until
``SessionReady`` or ``SessionFailed``), then opens the audio WebSocket. There it sends ``--audio-frames``
20 ms PCM16 frames at a microphone's pace, listens ``--hold-seconds`` longer and hangs up (close 1000),
which ends the call on the platform and frees the gateway's slot. Then it pauses about ``--think-seconds``
and starts again.

Run (see the README's "Load testing")::

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 20 -r 5 -t 1m

Besides the HTTP requests, these rows appear in Locust's statistics (and its CSV files):

* ``hub connect``: negotiate, WebSocket and handshake of ``/sessionHub``; ``hub Register``: the invocation.
* ``queue wait``: from the ``202`` to ``SessionReady`` (a failure when ``SessionFailed`` arrives, the hub
  drops the visitor, or ``--queue-timeout`` passes).
* ``queue estimate error``: how far the first ``estimatedWaitSeconds`` a visitor was told missed: the
  absolute difference between that estimate and the wait that followed it (milliseconds, like every row).
* ``audio connect`` (WebSocket open), ``audio first frame`` (open to the agent's first frame) and
  ``audio call`` (open to hang-up; its content size is the bytes of audio received).
"""

from __future__ import annotations

import random
import time
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust import HttpUser, events, task

from audio_call import AudioCall
from hub_client import HubConnection

#: The session request's rows in the statistics, by answer (a refusal stays under the plain path).
SERVED_AT_ONCE = "/api/session/request (200 served)"
QUEUED = "/api/session/request (202 queued)"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--campaign", default="DemoCampaign", include_in_web_ui=True,
                       help="campaignId of the session requests (the demo's: DemoCampaign)")
    parser.add_argument("--region", default="local", include_in_web_ui=True,
                       help="regionId of the session requests (the demo's: local)")
    parser.add_argument("--audio-frames", type=int, default=50, include_in_web_ui=True,
                       help="20 ms audio frames each visitor sends once connected (default 50: one second)")
    parser.add_argument("--hold-seconds", type=float, default=2.0, include_in_web_ui=True,
                       help="seconds a visitor stays in the call after its last frame before hanging up")
    parser.add_argument("--think-seconds", type=float, default=1.0, include_in_web_ui=True,
                       help="mean pause between a visitor's calls (uniform between half and one and a half times it)")
    parser.add_argument("--queue-timeout", type=float, default=600.0, include_in_web_ui=True,
                       help="seconds a queued visitor waits for SessionReady before counting a failure")
    parser.add_argument("--sample-rate", type=int, default=16000, include_in_web_ui=True,
                       help="PCM16 sample rate asked for in both directions (default 16000)")
    parser.add_argument("--origin", default="", include_in_web_ui=True,
                       help="Origin header to send, as a page of that origin would (must be in AllowedOrigins); "
                            "default none, as from an app")


def session_body(options: Any) -> dict[str, Any]:
    """The widget's session request for the configured campaign, region and audio format."""
    rate = options.sample_rate
    return {
        "campaignId": options.campaign,
        "regionId": options.region,
        "transportType": 0,
        "clientIdentifier": None,
        "dynamicVariables": {"FirstName": "Locust"},
        "metadata": {"source": "loadtest"},
        "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": rate, "inputBitsPerSample": 16,
                               "outputEncodingType": 1, "outputSampleRate": rate, "outputBitsPerSample": 16},
    }


def record(request_type: str, name: str, seconds: float, *, length: int = 0,
           error: Exception | str | None = None) -> None:
    """One row of Locust's statistics for something that is not a plain HTTP request."""
    if isinstance(error, str):
        error = Exception(error)
    events.request.fire(request_type=request_type, name=name, response_time=seconds * 1000,
                        response_length=length, exception=error, context={})


class QueueWait:
    """What one queued visitor hears on the hub: the outcome, and the first estimate it was told."""

    def __init__(self) -> None:
        self.outcome = AsyncResult()  # ("ready", url) or ("failed", message)
        self.estimate: tuple[float, float] | None = None  # (seconds told, when told)
        self.finished_at = 0.0  # when the outcome arrived (perf_counter)

    def position(self, update: dict[str, Any] | None = None, *_: Any) -> None:
        seconds = (update or {}).get("estimatedWaitSeconds")
        if self.estimate is None and seconds is not None:
            self.estimate = (float(seconds), time.perf_counter())

    def ready(self, event: dict[str, Any] | None = None, *_: Any) -> None:
        url = (event or {}).get("webSocketUrl")
        self.finish(("ready", url) if url else ("failed", "SessionReady without a webSocketUrl"))

    def failed(self, event: dict[str, Any] | None = None, *_: Any) -> None:
        self.finish(("failed", "SessionFailed: " + str((event or {}).get("message"))))

    def finish(self, outcome: tuple[str, str]) -> None:
        if not self.outcome.ready():
            self.finished_at = time.perf_counter()
            self.outcome.set(outcome)


class WidgetVisitor(HttpUser):
    """A visitor pressing Call on the widget, again and again."""

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.headers = {"Origin": self.options.origin} if self.options.origin else {}
        self.queued_id: str | None = None  # waiting in the queue: given back if the run stops meanwhile
        self.hub: HubConnection | None = None
        self.call: AudioCall | None = None

    def wait_time(self) -> float:
        return random.uniform(0.5, 1.5) * self.options.think_seconds

    @task
    def visit(self) -> None:
        url = self.request_session()
        if url is not None:
            self.talk(url)

    def request_session(self) -> str | None:
        """The session request; the audio URL when the visitor is (eventually) served, else ``None``."""
        with self.client.post("/api/session/request", json=session_body(self.options), headers=self.headers,
                              catch_response=True) as response:
            body = self._json(response)
            # Two rows, so the statistics show how many visitors were served at once and how many queued.
            if response.status_code == 200 and body.get("webSocketUrl"):
                response.request_meta["name"] = SERVED_AT_ONCE
                response.success()
                return body["webSocketUrl"]
            if response.status_code == 202 and body.get("uniqueRequestId"):
                response.request_meta["name"] = QUEUED
                response.success()
                queued_at = time.perf_counter()
            else:
                response.failure(f"{response.status_code}: {body.get('message', response.text[:200])}")
                return None
        return self.wait_in_queue(body["uniqueRequestId"], queued_at)

    def wait_in_queue(self, request_id: str, queued_at: float) -> str | None:
        """Wait on ``/sessionHub`` as the widget does; records the hub's and the queue's rows."""
        self.queued_id = request_id
        wait = QueueWait()
        try:
            hub = self.hub = HubConnection(
                self.host.rstrip("/") + "/sessionHub", headers=self.headers,
                post=lambda url: self.client.post(url, headers=self.headers, name="/sessionHub/negotiate"),
                on_close=lambda reason: wait.finish(("failed", f"hub connection lost: {reason}")))
            hub.on("QueuePositionUpdated", wait.position)
            hub.on("SessionReady", wait.ready)
            hub.on("SessionFailed", wait.failed)
            if not self._timed("hub", "connect", hub.connect):
                return self._queue_failed(queued_at, "no hub connection")
            if not self._timed("hub", "Register", lambda: hub.invoke("Register", request_id)):
                return self._queue_failed(queued_at, "Register failed")
            try:
                kind, detail = wait.outcome.get(timeout=self.options.queue_timeout)
            except gevent.Timeout:
                return self._queue_failed(queued_at, f"no SessionReady in {self.options.queue_timeout:g} s")
        finally:
            self._close_hub()
        self.queued_id = None
        served_at = wait.finished_at
        if kind != "ready":
            record("queue", "wait", served_at - queued_at, error=detail)
            return None
        record("queue", "wait", served_at - queued_at)
        if wait.estimate is not None:
            told, told_at = wait.estimate
            record("queue", "estimate error", abs((served_at - told_at) - told))
        return detail

    def talk(self, url: str) -> None:
        """The call: audio WebSocket, frames both ways, hang-up; records the audio rows."""
        call = self.call = AudioCall(url, sample_rate=self.options.sample_rate, headers=self.headers)
        started = time.perf_counter()
        try:
            result = call.run(frames=self.options.audio_frames, hold_seconds=self.options.hold_seconds)
        except Exception as exc:  # refused or broken before the socket opened: websocket-client's errors vary
            record("audio", "connect", time.perf_counter() - started, error=exc)
            return
        finally:
            self.call = None
        record("audio", "connect", result.connect_seconds)
        if result.first_frame_seconds is not None:
            record("audio", "first frame", result.first_frame_seconds)
        error = None
        if result.ended_by_server and result.server_close_code != 1000:
            error = f"the platform ended the call: {result.ended_by_server}"
        elif result.frames_received == 0:
            error = "no audio frame received"
        record("audio", "call", time.perf_counter() - started - result.connect_seconds,
               length=result.bytes_received, error=error)

    def on_stop(self) -> None:
        # Stopped mid-visit: hang up, and give a waiting place back as the widget's page-close beacon does
        # (otherwise it would be served to nobody once it reached the front).
        if self.call is not None:
            self.call.hang_up()
        self._close_hub()
        self._give_back()

    def _timed(self, request_type: str, name: str, step: Any) -> bool:
        started = time.perf_counter()
        try:
            step()
        except Exception as exc:  # HubError, or the socket's and websocket-client's own errors
            record(request_type, name, time.perf_counter() - started, error=exc)
            return False
        record(request_type, name, time.perf_counter() - started)
        return True

    def _queue_failed(self, queued_at: float, why: str) -> None:
        record("queue", "wait", time.perf_counter() - queued_at, error=why)
        self._close_hub()
        self._give_back()
        return None

    def _give_back(self) -> None:
        """Leave the queue over HTTP (as the widget's beacon does); 409 means it was served or gone already."""
        if self.queued_id is None:
            return
        request_id, self.queued_id = self.queued_id, None
        with self.client.post(f"/api/session/leave/{request_id}", headers=self.headers,
                              name="/api/session/leave/[id]", catch_response=True) as response:
            if response.status_code in (204, 404, 409):
                response.success()

    def _close_hub(self) -> None:
        if self.hub is not None:
            self.hub.close()
            self.hub = None

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

