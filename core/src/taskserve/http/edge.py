"""The edge of the HTTP ingress: what every request meets before a route runs,
and how every answer is encoded.

* :class:`GuardedRoute` (the route class of :func:`~taskserve.http.task_router`)
  checks a body route's Content-Type (415), streams the body with a byte
  budget (413; a declared Content-Length over it is answered without reading
  a byte), bounds the time the body may take (408), and checks its JSON
  nesting depth (422) - all before the body is parsed. It renders validation
  errors and taskserve errors itself, so the router answers the same in any
  FastAPI app, and turns anything unforeseen into a logged, detail-free
  error instead of a dropped connection.
* :class:`SafeJSONResponse` encodes with the standard library, never with
  pydantic's serializer (whose recursion limit is 255 levels): strings UTF-8
  cannot carry are sent as ``\\u`` escapes, and a stored value kept as
  :class:`~taskserve.serialization.RawJson` is sent as the JSON it is.

What the servers themselves give: uvicorn answers a request whose body is
never read once the app responds, then closes the connection; it has no
timeout of its own for a body that stops arriving (``timeout_keep_alive``
counts only between requests), and Starlette waits as long as the client
does - hence ``body_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from taskserve.errors import TaskserveError
from taskserve.http.settings import HttpSettings
from taskserve.models import TaskError
from taskserve.redaction import redact_url
from taskserve.serialization import RawJson, text_depth

logger = logging.getLogger("taskserve.http")

_PATH = re.compile(r"(?<![\w/:.\-~])/(?:[\w.\-~]+/)+([\w.\-~]*)")


def shorten_paths(text: str) -> str:
    """``text`` with absolute file paths cut to their last part (``…/tasks.db``)."""
    return _PATH.sub(lambda m: f"…/{m[1]}", text)


def present_error(error: TaskError | None, expose: bool) -> TaskError | None:
    """A task error as HTTP clients see it: type and message always; the
    traceback and full server paths only when ``expose``."""
    if error is None or expose:
        return error
    return TaskError(type=error.type, message=shorten_paths(error.message), traceback="")


def _placeholders(content: Any, raws: dict[str, str]) -> Any:
    """Replace RawJson values (top level, or one or two levels down) by tokens."""

    def swap(value: Any, depth: int) -> Any:
        if isinstance(value, RawJson):
            token = f"\x00taskserve-raw-{len(raws)}\x00"
            raws[json.dumps(token)] = str.__str__(value)
            return token
        if depth < 3 and isinstance(value, dict):
            return {k: swap(v, depth + 1) for k, v in value.items()}
        if depth < 3 and isinstance(value, list):
            return [swap(v, depth + 1) for v in value]
        return value

    return swap(content, 0)


def encode_json(content: Any) -> bytes:
    """``content`` as UTF-8 JSON bytes; ValueError (or RecursionError) if it
    cannot be represented."""
    raws: dict[str, str] = {}
    content = _placeholders(content, raws)
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        data = text.encode("ascii")
    for token, raw in raws.items():
        data = data.replace(token.encode("ascii"), raw.encode("utf-8", "surrogatepass"))
    return data


class SafeJSONResponse(JSONResponse):
    """A JSON response encoded by :func:`encode_json`."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> SafeJSONResponse:
    """An error answer: ``{"detail": ...}``."""
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)


def describe_validation(error: RequestValidationError) -> str:
    """One line naming each invalid part of a request."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "json_invalid":
            message = f"malformed JSON: {item.get('ctx', {}).get('error', message)}"
        parts.append(f"{location[:200]}: {message[:300]}")
    return "invalid request: " + "; ".join(parts)


def validation_response(error: RequestValidationError) -> SafeJSONResponse:
    """The 422 answer of a request FastAPI could not validate (inputs not echoed)."""
    errors = [
        {
            "type": str(item.get("type", "")),
            "loc": [p if isinstance(p, int) else str(p)[:200] for p in item.get("loc", ())],
            "msg": str(item.get("msg", ""))[:300],
        }
        for item in error.errors()[:50]
    ]
    return SafeJSONResponse({"detail": describe_validation(error), "errors": errors}, 422)


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


def _query_names(dependant: Any) -> frozenset[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


class GuardedRoute(APIRoute):
    """An APIRoute that applies :class:`HttpSettings` at the edge (see the module
    docstring). :func:`guarded_route` makes one per router."""

    settings: ClassVar[HttpSettings] = HttpSettings()
    body_limit: ClassVar[int] = 2 * 1024 * 1024
    render_error: ClassVar[Callable[[TaskserveError], Response]]

    allow_methods: frozenset[str] = frozenset()
    """All methods of this route's path, when other routes serve it too (the
    405 answer's Allow header names them all)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_methods and scope["method"] not in self.allow_methods:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(self.allow_methods))})
        await super().handle(scope, receive, send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        known_query = _query_names(self.dependant)

        async def guarded(request: Request) -> Response:
            try:
                unknown = sorted(set(request.query_params) - known_query)
                if unknown:
                    listed = ", ".join(repr(name[:50]) for name in unknown[:5])
                    allowed = ", ".join(sorted(known_query)) or "none"
                    return problem(
                        422, f"unknown query parameter(s) {listed}; this route takes: {allowed}"
                    )
                if takes_body:
                    refused = await self._read_body(request)
                    if refused is not None:
                        return refused
                return await handler(request)
            except RequestValidationError as e:
                return validation_response(e)
            except TaskserveError as e:
                return type(self).render_error(e)
            except Exception as e:
                if getattr(e, "status_code", None) is not None:
                    raise  # HTTPException (401...): the app renders it
                logger.exception("taskserve: %s %s failed", request.method, request.url.path)
                return problem(
                    500, f"internal error ({type(e).__name__}); the server log has the details"
                )

        return guarded

    async def _read_body(self, request: Request) -> Response | None:
        settings, limit = self.settings, self.body_limit
        content_type = request.headers.get("content-type")
        declared = request.headers.get("content-length")
        if not content_type:
            if declared in (None, "0") and "transfer-encoding" not in request.headers:
                return None  # no body at all: FastAPI says whether one was required
            return problem(415, "send the body as JSON with 'Content-Type: application/json'")
        if not _is_json(content_type):
            return problem(
                415,
                f"unsupported Content-Type '{content_type[:100]}'; send the body as JSON "
                "with 'Content-Type: application/json' (UTF-8)",
            )
        if declared is not None:
            if not declared.strip().isdigit():
                return problem(400, "Content-Length must be a number of bytes")
            if int(declared) > limit:
                return problem(
                    413, f"the body is {int(declared)} bytes, over the limit of {limit} bytes"
                )
        body = bytearray()
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        return problem(413, f"the body is over the limit of {limit} bytes")
        except TimeoutError:
            return problem(
                408, f"the body did not arrive within {settings.body_timeout_s:g} seconds"
            )
        depth = text_depth(bytes(body))
        if depth > settings.max_json_depth:
            return problem(
                422,
                f"the JSON body nests {depth} levels of lists and objects, deeper than the "
                f"limit of {settings.max_json_depth}",
            )
        request._body = bytes(body)  # what FastAPI's body parsing reads
        return None


def guarded_route(
    settings: HttpSettings, body_limit: int, render_error: Callable[[TaskserveError], Response]
) -> type[GuardedRoute]:
    """A :class:`GuardedRoute` class for one router."""
    return type(
        "GuardedRoute",
        (GuardedRoute,),
        {
            "settings": settings,
            "body_limit": body_limit,
            "render_error": staticmethod(render_error),
        },
    )


def redacted(text: str, expose: bool) -> str:
    """An error text for HTTP clients: passwords always hidden, paths shortened
    unless ``expose``."""
    text = redact_url(text)
    return text if expose else shorten_paths(text)
