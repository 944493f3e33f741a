"""Request bodies: a size cap answered with 413 without reading the rest, and JSON bodies parsed after auth.

- :class:`BodyLimit` is an ASGI middleware (``tidings serve`` puts it in front of the whole application; a host
  application can add it too): a declared ``Content-Length`` over the limit is answered 413 at once, a chunked
  body is counted as the application reads it, and any response sent while part of the body is still unread
  carries ``Connection: close``, so the server drops the connection instead of reading (and discarding) the
  rest -- a 401 to a 100 MB upload costs the first packets, not 100 MB.
- :func:`read_json` parses an endpoint's JSON body into a model *after* its dependencies (authentication) ran:
  endpoints take ``request: Request`` instead of a body parameter, so 401/403 come before 413/422.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

__all__ = ["BodyLimit", "BodyTooLarge", "json_body_openapi", "read_body", "read_json"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

M = TypeVar("M", bound=BaseModel)

_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """413: the request body is over ``TIDINGS_MAX_BODY_BYTES`` (the connection is closed after the reply)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE, f"Request body too large (limit {limit} bytes)", headers=_CLOSE
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _has_body(scope: Scope, length: int | None) -> bool:
    if length is not None:
        return length > 0
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


async def _reply_413(send: Send, limit: int) -> None:
    body = f'{{"detail":"Request body too large (limit {limit} bytes)"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: request bodies over ``max_bytes`` get 413; unread bodies are never drained."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Dispatch one connection (anything but HTTP goes straight through, with no extra coroutine)."""
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await _reply_413(send, limit)
            return
        if not _has_body(scope, length):
            await self.app(scope, receive, send)
            return
        received = 0
        complete = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:  # answered before the body was read: do not let the server drain it
                    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, closing_send)
        except BodyTooLarge:
            if started:
                raise
            await _reply_413(send, limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with :class:`BodyTooLarge` (before reading them)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, model: type[M], limit: int) -> M:
    """Read, size-check and validate a JSON body as ``model``; 413 or FastAPI's 422 format on failure."""
    content_type = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if not (content_type == "application/json" or content_type.endswith("+json")):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Send the body as application/json")
    body = await read_body(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {key: value for key, value in error.items() if key != "input" or error["type"] != "json_invalid"}
            | {"loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body read by :func:`read_json` (FastAPI cannot see it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
