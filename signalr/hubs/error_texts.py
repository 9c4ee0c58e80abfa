"""Client-visible error texts (reference §7.2): .NET's, verbatim, since clients and tests compare them."""

from __future__ import annotations

from signalr.hubs.hub import HubError
from signalr.hubs.methods import BindingError


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def unknown_method_error(target: str) -> str:
    """Completion error for a target no method matches."""
    return f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."


def binding_error(target: str, exc: BindingError, *, detailed: bool) -> str:
    """Completion error when the arguments do not bind."""
    text = f"Failed to invoke '{target}' due to an error on the server."
    return f"{text} InvalidDataException: {exc}" if detailed else text


def invocation_error(target: str, exc: BaseException, *, detailed: bool) -> str:
    """Completion error when the method raised; a :class:`HubError` text is always forwarded."""
    text = f"An unexpected error occurred invoking '{target}' on the server."
    if isinstance(exc, HubError):
        return f"{text} HubException: {exc}"
    return f"{text} {_detail(exc)}" if detailed else text


def stream_error(exc: BaseException, *, detailed: bool) -> str:
    """Completion error when a server-to-client stream raised."""
    text = "An error occurred on the server while streaming results."
    if isinstance(exc, HubError):
        return f"{text} HubException: {exc}"
    return f"{text} {_detail(exc)}" if detailed else text


def stream_count_error(target: str, sent: int, expected: int) -> str:
    """Completion error when the number of ``streamIds`` differs from the stream parameters."""
    return (
        f"An unexpected error occurred invoking '{target}' on the server. "
        f"HubException: Client sent {sent} stream(s), Hub method expects {expected}."
    )


def streaming_kind_error(target: str, *, method_is_streaming: bool) -> str:
    """Completion error when the invocation kind does not match the method kind."""
    if method_is_streaming:
        return f"The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
    return f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."


def duplicate_invocation_error(invocation_id: str) -> str:
    """Completion error for a StreamInvocation whose id is already running."""
    return f"Invocation ID '{invocation_id}' is already in use."


CONNECTION_ERROR = "Connection closed with an error."
