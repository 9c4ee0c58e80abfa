"""The JSON base of every REST handler: JSON bodies, CORS, request ids, origin checks, bounded bodies.

:class:`JsonHandler` answers every error, Tornado's own included, as ``{"message": ...}`` a person can
act on, never a traceback or an HTML page. :class:`LimitedBodyHandler` reads its body itself, so that an
oversize one is refused with 413 as soon as it passes the limit, before it is buffered.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, ClassVar

import tornado.web
from tornado.httputil import HTTPServerRequest

from gateway.model import jsonutil
from gateway.http.cors import CorsPolicy
from gateway.logs.context import current_request_id
from gateway.model.request import MAX_BODY_BYTES
from gateway.model.text import is_sendable, unsendable_message

log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

BODY_TOO_LARGE_MESSAGE = f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB."
UNKNOWN_REQUEST_MESSAGE = "No queued request with this uniqueRequestId."
ORIGIN_NOT_ALLOWED_MESSAGE = "Origin not allowed."
#: The longest request or conversation id the admission store accepts.
MAX_ID_LENGTH = 256


def request_id_of(request: HTTPServerRequest) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a fresh one (kept on the request)."""
    existing = getattr(request, "_iqra_request_id", None)
    if existing:
        return existing
    supplied = request.headers.get("X-Request-Id", "")
    rid = supplied if _REQUEST_ID.match(supplied) else os.urandom(8).hex()
    request._iqra_request_id = rid  # type: ignore[attr-defined]
    return rid


class ClientError(tornado.web.HTTPError):
    """A refusal raised where returning is not possible (Tornado's argument decoding); ``message`` is sent."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class JsonHandler(tornado.web.RequestHandler):
    """JSON responses, CORS, request ids, and error bodies a person can act on."""

    cors: CorsPolicy
    #: Refuse requests from a browser page on a foreign origin (403) instead of only hiding the answer:
    #: set on routes that act on the caller's behalf, since a browser sends them with its visitor's IP.
    origin_guarded: ClassVar[bool] = False
    #: What this route's path argument is, for the message when it is not valid UTF-8.
    path_argument: ClassVar[str] = "The URL path"

    def initialize(self, *, cors: CorsPolicy, **deps: Any) -> None:
        self.cors = cors
        for name, value in deps.items():
            setattr(self, name, value)

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-Id", request_id_of(self.request))
        # Tornado clears all headers before an error page (send_error): putting CORS here too keeps a
        # 500 readable by the page that asked. On the very first call initialize() has not run yet.
        if getattr(self, "cors", None) is not None:
            self._apply_cors()

    def prepare(self) -> None:
        # Set for each request before anything else runs: everything the request awaits, and the tasks
        # it starts (a dispatch it triggers), log under its id.
        current_request_id.set(request_id_of(self.request))
        self._apply_cors()
        origin = self.request.headers.get("Origin")
        if self.origin_guarded and self.request.method != "OPTIONS" and self.cors.refuses(origin):
            self.send_message(403, ORIGIN_NOT_ALLOWED_MESSAGE)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # Tornado's own refusal is a 400 naming nothing; say which part was wrong.
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ClientError(400, unsendable_message(self.path_argument)) from None

    def _apply_cors(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin:
            self.set_header("Vary", "Origin")
            if self.request.method != "OPTIONS":
                for name, value in self.cors.response_headers(origin).items():
                    self.set_header(name, value)

    def options(self, *args: Any) -> None:
        headers = self.cors.preflight_headers(
            self.request.headers.get("Origin"),
            self.request.headers.get("Access-Control-Request-Method"),
            self.request.headers.get("Access-Control-Request-Headers"),
        )
        for name, value in headers.items():
            self.set_header(name, value)
        self.clear_header("Content-Type")
        self.set_status(204)
        self.finish()

    def send_json(self, status: int, body: Any | None, *, headers: dict[str, str] | None = None) -> None:
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        if body is None:
            self.clear_header("Content-Type")
            self.finish()
        else:
            self.finish(jsonutil.dumps(body))

    def send_message(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, {"message": message}, headers=headers)

    def request_id_of_path(self, raw_id: str, *, name: str = "uniqueRequestId",
                           unknown: str = UNKNOWN_REQUEST_MESSAGE) -> str | None:
        """The id in a path (a request's, or the ``name`` one), lower-cased (ids are case-insensitive); None
        after answering 404 with ``unknown`` when no id can be it, being longer than any or blank (as for
        any unknown one), or 400 when it is not text."""
        if len(raw_id) > MAX_ID_LENGTH or not raw_id.strip():  # the store refuses to even look these up
            self.send_message(404, unknown)
            return None
        if not is_sendable(raw_id):
            self.send_message(400, unsendable_message(name))
            return None
        return raw_id.lower()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's default page includes a traceback in debug mode and HTML otherwise; clients get JSON.
        messages = {
            400: "The request could not be understood.",
            404: "Not found.",
            405: "This method is not allowed here.",
            413: BODY_TOO_LARGE_MESSAGE,
        }
        message = messages.get(status_code, "An unexpected error occurred. Please try again.")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ClientError):
            message = exc.message
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(jsonutil.dumps({"message": message}))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            log.error("unhandled error in %s %s [request %s]", self.request.method, self.request.path,
                      request_id_of(self.request), exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class LimitedBodyHandler(JsonHandler):
    """Reads the body itself so that an oversize one is refused with 413 before it is buffered: a declared
    length before reading, a chunked body as soon as it passes the limit."""

    max_body_bytes = MAX_BODY_BYTES

    def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        super().prepare()
        if self._finished:
            return
        self.check_request_head()
        if self._finished:
            return
        if self.request.method in ("POST", "PUT", "PATCH"):
            declared = self.request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                self._too_large = True
                # Tornado closes the connection after this response because the body was not read.
                self.send_message(413, BODY_TOO_LARGE_MESSAGE)

    def check_request_head(self) -> None:
        """Answer here (before the body is read) when the head alone decides; by default nothing to check."""

    def data_received(self, chunk: bytes) -> None:
        if self._too_large or self._finished:
            return
        self._size += len(chunk)
        if self._size > self.max_body_bytes:
            # A chunked body: answer now, not after reading the rest (Tornado then closes the connection).
            self._too_large = True
            self._chunks.clear()
            self.send_message(413, BODY_TOO_LARGE_MESSAGE)
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def body_too_large(self) -> bool:
        """True when a chunked body went over the limit (the declared case answered in ``prepare``)."""
        if self._too_large and not self._finished:
            self.send_message(413, BODY_TOO_LARGE_MESSAGE)
        return self._too_large
