"""The two failures every domain shares: a row that does not exist, a state that forbids the
change. The web layer turns them into 404 and 409 in one place (tracker/web/api/errors.py)."""

from __future__ import annotations

from typing import Any


class NotFound(LookupError):
    """A missing row; `what` names it ("referrer", "reward") for the message."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(Exception):
    """The change clashes with what is stored (a taken slug, a reward already decided).

    `details` travel to the API error body, e.g. `reward_status="approved"`.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details
