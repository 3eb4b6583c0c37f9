"""Log lines: one JSON object a line (the server's default) or plain text, with request ids.

An API request carries an id: the caller's `X-Request-Id` when it is a sane token, otherwise a
new one. It is answered in the `X-Request-Id` header and set in a context variable, so every
log line written while handling the request names it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(header: str | None) -> str:
    """The caller's request id if it is a plain token, otherwise a new one."""
    if header and _SANE.fullmatch(header):
        return header
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                  .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            line["request_id"] = rid
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = REQUEST_ID.get()
        return f"{text} request_id={rid}" if rid is not None else text


def setup(fmt: str, level: int = logging.INFO) -> None:
    """Send the process's log lines to stderr in `fmt` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
