"""Payout batches over HTTP (DESIGN section 5): the list, and one batch with its lines, as
JSON or (`Accept: text/csv`) as the CSV its export wrote; `?format=paypal|wise` (CSV whatever
the Accept header) gives it in a provider's bulk-upload format (tracker.finance.payouts), and
`&currency=` narrows the file to its lines in that currency (PayPal takes one currency per
file)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tracker.finance.payouts import (
    FORMATS,
    PayoutBatch,
    PayoutBatchDetail,
    PayoutFormatError,
    PayoutLine,
    batch_csv,
    get_batch,
    list_batches,
)
from tracker.formats import rfc3339
from tracker.web import keys
from tracker.web.api.common import (
    choice_param,
    decode_cursor,
    encode_cursor,
    limit_param,
    page,
    program_by_slug,
    query_param,
    requires,
)
from tracker.web.api.errors import invalid, not_found


def _line(line: PayoutLine) -> dict[str, Any]:
    return {"program": line.program, "beneficiary": line.payee, "amount": line.amount,
            "currency": line.currency, "reward_ids": list(line.reward_ids)}


def _batch(batch: PayoutBatch | PayoutBatchDetail) -> dict[str, Any]:
    lines: Any = (batch.lines if isinstance(batch, PayoutBatch)
                  else [_line(ln) for ln in batch.lines])
    return {"batch_id": str(batch.batch_id), "created_at": rfc3339(batch.created_at),
            "created_by": batch.created_by, "lines": lines, "totals": dict(batch.totals)}


def _wants_csv(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


@requires("finance")
async def list_(request: web.Request) -> web.Response:
    limit = limit_param(request)
    slug = query_param(request, "program", max_len=63)
    program_id = None if slug is None else (await program_by_slug(request, slug)).id
    cursor = decode_cursor(request, 1)
    before = None if cursor is None else cursor[0]
    if before is not None and len(before) != 36:
        raise invalid("cursor is not valid", "cursor")
    async with request.config_dict[keys.POOL].acquire() as conn:
        batches = await list_batches(conn, program_id=program_id, limit=limit, before=before)
    return page([_batch(b) for b in batches], limit,
                encode_cursor(batches[-1].batch_id) if batches else None)


@requires("finance")
async def get(request: web.Request) -> web.Response:
    raw = request.match_info["batch_id"]
    if len(raw) > 64:
        raise not_found("payout batch")
    fmt = choice_param(request, "format", FORMATS)
    currency = query_param(request, "currency", max_len=3)
    if currency is not None and not (currency.isascii() and currency.isalpha()
                                     and currency.isupper() and len(currency) == 3):
        raise invalid("currency must be an ISO 4217 code such as USD", "currency")
    async with request.config_dict[keys.POOL].acquire() as conn:
        batch = await get_batch(conn, raw)
    if fmt is not None or _wants_csv(request):
        fmt = fmt or "csv"
        try:
            text = batch_csv(batch, fmt, currency)
        except PayoutFormatError as exc:
            raise invalid(str(exc), "format") from None
        name = "-".join(x for x in ("payout", str(batch.batch_id),
                                    None if fmt == "csv" else fmt, currency) if x)
        return web.Response(
            text=text, content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return web.json_response(_batch(batch))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/payouts", list_)
    app.router.add_get("/payouts/{batch_id}", get)
