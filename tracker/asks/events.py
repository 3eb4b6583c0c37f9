"""Customers' events: a customer's moment as the merchant reports it (DESIGN section 5).

`POST /api/v1/events` and `refguard import --events` take the same body,
`{program, event_id, customer_id, type, occurred_at, score?, properties?}`, validated here with
the conversions' pieces (tracker.intake.conversions: FieldInvalid, opaque_text, event_time,
body_hash) and stored idempotently on (program, event_id) like conversions: the first body
stored under an event id wins, the same body again answers the stored event, another body is a
conflict. The asks job (tracker/asks/asks.py) takes them up from `customer_events`.

- `type`: the merchant's word (nps, review, milestone, support_resolved, ...): a-z, 0-9, '_',
  '.' or '-', at most 64 characters (formats.EVENT_TYPE_RE, as the table's CHECK). The
  conversion types (signup, purchase, ...) are refused: those are conversions, and an asks rule
  `{"on": "purchase"}` reads purchases from the conversions.
- `score`: a finite number within +-1e9 (NPS 0-10, stars 1-5), as asks rules' min_score.
- `properties`: a JSON object of at most PROPERTIES_MAX_BYTES (compact UTF-8), nested at most
  PROPERTIES_MAX_DEPTH objects or lists deep, keys of 1 to 64 characters; text holds neither
  NUL nor lone surrogates (jsonb takes neither) and numbers are finite.
- `occurred_at`: required, RFC 3339 with an offset, from 2000 to 5 minutes ahead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from tracker.asks import queries
from tracker.asks.queries import Event, EventRow
from tracker.formats import CONVERSION_TYPES, EVENT_TYPE_RE
from tracker.intake.conversions import FieldInvalid, body_hash, event_time, opaque_text
from tracker.intake.importer import Batches, ImportResult, numbered_lines
from tracker.intake.queries import program_ids

FIELDS = frozenset({"program", "event_id", "customer_id", "type", "occurred_at", "score",
                    "properties"})
SCORE_MAX = 1e9
PROPERTIES_MAX_BYTES = 4096
PROPERTIES_MAX_DEPTH = 4  # the object itself is depth 1
PROPERTY_KEY_MAX = 64


@dataclass(frozen=True, slots=True)
class EventInput:
    program: str
    event_id: str
    customer_id: str
    type: str
    occurred_at: datetime
    score: float | None
    properties: str  # canonical JSON text of an object
    body_hash: bytes

    def row(self, program_id: int) -> EventRow:
        return EventRow(program_id, self.event_id, self.customer_id, self.type,
                        self.occurred_at, self.score, self.properties, self.body_hash)


def _type(raw: object) -> str:
    if not isinstance(raw, str) or not EVENT_TYPE_RE.fullmatch(raw):
        raise FieldInvalid("type", "type must be a word of a-z, 0-9, '_', '.' or '-' (at most "
                           "64 characters, starting with a letter or digit)")
    if raw in CONVERSION_TYPES:
        raise FieldInvalid("type", f"{raw!r} is a conversion: report it to "
                           "/api/v1/conversions")
    return raw


def _score(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) \
            or not abs(raw) <= SCORE_MAX:  # NaN fails this too
        raise FieldInvalid("score", f"score must be a finite number within +-{SCORE_MAX:g}")
    return float(raw)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "holds text that is not valid Unicode (a lone surrogate)"
    return None


def _properties(raw: object) -> str:
    """The properties as canonical JSON text (keys sorted), or FieldInvalid."""
    if raw is None:
        return "{}"
    if not isinstance(raw, dict):
        raise FieldInvalid("properties", "properties must be a JSON object")
    stack: list[tuple[object, int]] = [(raw, 1)]
    while stack:
        item, depth = stack.pop()
        problem = None
        if isinstance(item, dict | list):
            if depth > PROPERTIES_MAX_DEPTH:
                problem = f"are nested more than {PROPERTIES_MAX_DEPTH} levels deep"
            elif isinstance(item, dict):
                for key, value in item.items():
                    if not 1 <= len(key) <= PROPERTY_KEY_MAX:
                        problem = f"have a key that is not 1 to {PROPERTY_KEY_MAX} characters"
                        break
                    if (why := _text_problem(key)) is not None:
                        problem = f"have a key that {why}"
                        break
                    stack.append((value, depth + 1))
            else:
                stack.extend((value, depth + 1) for value in item)
        elif isinstance(item, str):
            if (why := _text_problem(item)) is not None:
                problem = f"hold a value that {why}"
        elif isinstance(item, float) and not math.isfinite(item):
            problem = "hold a number that is not finite"
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > 10**100:
            problem = "hold a number too large"
        if problem is not None:
            raise FieldInvalid("properties", f"properties {problem}")
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode("utf-8")) > PROPERTIES_MAX_BYTES:
        raise FieldInvalid("properties", f"properties take more than {PROPERTIES_MAX_BYTES} "
                           "bytes as compact JSON")
    return text


def parse_event(body: object, *, now: datetime | None = None) -> EventInput:
    """Validate an event body (the API's, or an import line); FieldInvalid names the field."""
    if not isinstance(body, dict):
        raise FieldInvalid("body", "the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise FieldInvalid(unknown[0], f"unknown field {unknown[0]!r}")
    program = opaque_text(body, "program", required=True, limit=63)
    event_id = opaque_text(body, "event_id", required=True)
    customer_id = opaque_text(body, "customer_id", required=True)
    kind = _type(body.get("type"))
    occurred_at = event_time(body.get("occurred_at"), now or datetime.now(UTC),
                             require_time=True)
    return EventInput(
        program=program or "", event_id=event_id or "", customer_id=customer_id or "",
        type=kind, occurred_at=occurred_at, score=_score(body.get("score")),
        properties=_properties(body.get("properties")), body_hash=body_hash(body))


@dataclass(frozen=True, slots=True)
class Stored:
    event: Event
    created: bool
    conflict: bool


async def store_event(conn: asyncpg.Connection, program_id: int, event: EventInput, *,
                      source: str = "api") -> Stored:
    """Store one event idempotently (the batch path with one row) and answer the stored one:
    `created` for the first, `conflict` when another body was stored under its event id."""
    status, = await queries.store_events(conn, [event.row(program_id)], source=source)
    stored = await queries.get_event(conn, program_id, event.event_id)
    return Stored(stored, created=status == "created", conflict=status == "conflict")


def _event_line(text: str, programs: dict[str, int]) -> EventRow | str:
    """An events line as a row to store, or why it is bad."""
    try:
        event = parse_event(json.loads(text))
    except FieldInvalid as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return "not valid JSON"
    program_id = programs.get(event.program)
    if program_id is None:
        return f"unknown program {event.program!r}"
    return event.row(program_id)


async def import_events(conn: asyncpg.Connection, path: Path,
                        progress: Callable[[int, int, bool], None] | None = None
                        ) -> ImportResult:
    """`refguard import --events`: an NDJSON file of event bodies (DESIGN section 6). A bad
    line is reported by its number and skipped; importing the same file again adds nothing."""
    programs = await program_ids(conn)
    result = ImportResult()
    done = 0

    async def store(rows: list[EventRow]) -> list[str]:
        return await queries.store_events(conn, rows, source="import")

    batches = Batches(path.name, store, result)
    for number, done, text in numbered_lines(path):
        result.read += 1
        parsed = _event_line(text, programs)
        if isinstance(parsed, str):
            result.bad.append(f"{path.name}:{number}: {parsed}")
            continue
        if await batches.add(number, parsed.event_id, parsed) and progress:
            progress(done, result.read, False)
    await batches.flush()
    if progress:
        progress(done, result.read, True)
    return result

