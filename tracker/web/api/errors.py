"""JSON errors for /api: `{"error": {"code": ..., "message": ...}}`, never a 500 for bad input."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from tracker import db, metrics
from tracker.errors import Conflict, NotFound
from tracker.logs import REQUEST_ID, request_id
from tracker.web import keys
from tracker.web.bodies import BodyError, json_problem, loads, read_body

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def bad_request(message: str, **details: Any) -> ApiError:
    return ApiError(400, "bad_request", message, **details)


def invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, "invalid", message, **({"field": field} if field else {}))


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(details)
    headers = {"WWW-Authenticate": 'Bearer realm="refguard"'} if status == 401 else None
    return web.json_response({"error": body}, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "timeout", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media", 422: "invalid", 429: "rate_limited",
}
MAX_BODY = 1024 * 1024  # the largest body any API call takes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_errors(handler: Handler) -> Handler:
    """Turn every failure of an API handler into a JSON error, and count the request.

    A decorator rather than a middleware on purpose: any middleware anywhere in the application
    makes aiohttp run the middleware chain for every request, the redirect included.
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await _handle(request, handler)

    return wrapped


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id(request.headers.get("X-Request-Id"))
    token = REQUEST_ID.set(rid)
    try:
        resp = await _answer(request, handler)
    finally:
        REQUEST_ID.reset(token)
    resp.headers["X-Request-Id"] = rid
    return resp


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except ApiError as exc:
        status = exc.status
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    except BodyError as exc:
        status = exc.status
        return body_error_response(exc)
    except NotFound as exc:
        status = 404
        return error_response(404, "not_found", str(exc))
    except Conflict as exc:
        status = 409
        return error_response(409, "conflict", str(exc), **exc.details)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "error")
        return error_response(exc.status, code, exc.reason or code)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        # Input that passed validation but not the schema (e.g. a value out of range). Answered
        # in the API's own words: the driver's text names internals and echoes the input.
        status = 422
        log.info("%s %s refused by the database: %s", request.method, request.path,
                 str(exc).split("\n", 1)[0])
        if isinstance(exc, asyncpg.DataError):
            return error_response(422, "invalid", "a value is out of range or not in a form "
                                  "the server can store")
        return error_response(422, "invalid", "the request breaks a rule of the stored data "
                              "(a duplicate, or a reference to something that does not exist)")
    except db.UNAVAILABLE as exc:
        status = 503
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        resp = error_response(503, "unavailable", "the database is unavailable; retry later")
        resp.headers["Retry-After"] = "1"
        return resp
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")
    finally:
        metrics.HTTP_REQUESTS.labels(route=route, status=str(status)).inc()
        metrics.API_SECONDS.labels(route=route).observe(time.perf_counter() - started)


def body_error_response(exc: BodyError) -> web.Response:
    """A refused body as a JSON error. The connection is closed after it (the rest of a body
    that was not read is not waited for); a 503 says when to come back."""
    resp = error_response(exc.status, exc.code, exc.message)
    if exc.status in (408, 413):
        resp.force_close()
    if exc.status == 503:
        resp.headers["Retry-After"] = "1"
    return resp


async def request_body(request: web.Request, *, limit: int = MAX_BODY,
                       unauthenticated: bool = False) -> bytes:
    """The raw body, bounded in size and time (tracker.web.bodies); BodyError otherwise."""
    return await read_body(request, request.config_dict[keys.BODY_READS], limit=limit,
                           unauthenticated=unauthenticated)


def parse_json(raw: bytes) -> Any:
    """JSON that is not too deep and holds only valid Unicode; else a 400."""
    try:
        value = loads(raw)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    problem = json_problem(value)
    if problem is not None:
        raise bad_request(problem)
    return value


async def read_json(request: web.Request) -> dict[str, Any]:
    # The Content-Type is not enforced (curl -d sends a form type); the body must be JSON.
    body = parse_json(await request_body(request))
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
