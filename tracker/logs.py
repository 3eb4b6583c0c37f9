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
from typing import Any

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


# Line breaks and every other control character (C0, DEL, C1, and the Unicode line and
# paragraph separators): what a value from a request may carry into a text log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text(text: str) -> str:
    """`text` on one line: `\\n`, `\\r`, `\\t` and `\\xNN` / `\\uNNNN` for the other
    control characters, so a value cannot start a line of its own (a forged record)."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0]) or (
        f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}"), text)


class TextFormatter(logging.Formatter):
    """One record, one line: the message (with its arguments, which may come from a request:
    a path with a percent-encoded newline, a header) is escaped by `escape_text`; a traceback
    keeps its lines, each indented, so none of them can pass for a record either."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # `record.message` is set afresh from the record's arguments by every format().
        record.message = escape_text(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return _indented(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        # logging caches the traceback's text on the record; other handlers get their own.
        cached, record.exc_text = record.exc_text, None
        try:
            text = super().format(record)
        finally:
            record.exc_text = cached
        rid = REQUEST_ID.get()
        return f"{text} request_id={rid}" if rid is not None else text


def _indented(text: str) -> str:
    """Every line of a traceback indented, each escaped (an exception's message is a value
    too); it follows its record's line."""
    return "\n".join("    " + escape_text(line) for line in text.splitlines())


def setup(fmt: str, level: int = logging.INFO) -> None:
    """Send the process's log lines to stderr in `fmt` ("json" or "text")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
