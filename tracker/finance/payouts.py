"""Payouts: where approved rewards are paid, as batches, exactly once.

`export_payouts` (run by `refguard payouts export`) pays every payee's balance (approved
rewards, net of clawbacks) as one batch, under a transaction-wide advisory lock (PAYOUT_LOCK),
so two exports running at once never pay a reward twice: the second waits, then finds nothing
new. Approvals take the same lock shared while they write their `earned` entries
(tracker.finance.ledger.earn). The CSV (PAYOUT_HEADER, fixed by DESIGN section 3) is written and
synced before the transaction commits; the rewards become `paid`, a `payout_batches` row
records the batch and a `payout` ledger entry zeroes each balance. `list_batches` and
`get_batch` read the batches back (GET /api/v1/payouts, and the review page); `batch_csv` is
the file of a stored batch, line for line the one its export wrote.

The file is opened in spreadsheets, and a beneficiary is a merchant's id that anybody who signs
up may choose: a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would
be read as a formula (`=HYPERLINK(...)`, DDE). Such a cell gets a leading `'` (OWASP, CSV
injection), which spreadsheets show as text and do not display. Numbers are left as they are: an
amount is an integer, negative for a clawback, and `-1500` must stay a number.

Besides that generic CSV (`csv`), a batch is written in the bulk-upload formats of two payout
providers (`render`; `refguard payouts export --format`, `GET /api/v1/payouts/{id}?format=`),
amounts in major units with the currency's ISO 4217 exponent (`major_units`: 2000 USD is
`20.00`, 2000 JPY `2000`, 2000 KWD `2.000`), text cells escaped as above. The beneficiary is
refguard's payee: the merchant's external id of the referrer (or the referee's customer id);
neither format has room for a comment, so the merchant must make sure (README, "Payouts to
PayPal and Wise") that these ids are what the provider expects, or map them to it before uploading:

- `paypal`, PayPal Payouts Web (developer.paypal.com, "Payouts Web" / "Use Web UI"): no header
  row; one row per payee: recipient identifier (e-mail, mobile number or PayPal PayerID: the
  payee id as it is), payment amount (`20.00`; whole numbers for HUF, JPY and TWD, which PayPal
  pays without decimals), currency code, Customer ID (`rg-<batch's first 8 hex>-<the line's
  first reward id>`, to reconcile with the generic CSV's `reward_ids`), note to recipient,
  recipient wallet (`PAYPAL`). PayPal takes one currency per file, at most 5,000 rows and
  only its own currencies: a batch that does not fit is refused (PayoutFormatError), never cut.
- `wise`, Wise batch payments, "Send by email" template (wise.com help, "How do I fill in my
  batch template?"): header `name,recipientEmail,paymentReference,receiverType,amountCurrency,
  amount,sourceCurrency,targetCurrency`; one row per payee: name and recipientEmail are the
  payee id, paymentReference `RG<batch's first 8 hex>` (short and alphanumeric: every
  currency's reference rules take it), receiverType `PRIVATE`, amountCurrency `target` (the
  payee gets exactly the amount; fees are the sender's), amount, and the line's currency as
  both source and target currency. Wise takes at most 1,000 transfers per file; a bigger batch
  is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker import audit
from tracker.errors import NotFound
from tracker.finance import queries, webhooks

# The fixed columns first (DESIGN section 3), then the program's slug.
PAYOUT_HEADER = ("batch_id", "beneficiary", "amount", "currency", "reward_ids", "program")
PAYOUT_LOCK = int.from_bytes(hashlib.sha256(b"refguard-payouts").digest()[:8], "big",
                             signed=True)


@dataclass(frozen=True, slots=True)
class PayoutLine:
    program_id: int
    payee: str
    amount: int
    currency: str
    reward_ids: tuple[int, ...]
    program: str = ""  # the program's slug


@dataclass(frozen=True, slots=True)
class PayoutBatch:
    """A batch as listed: `lines` is how many payees it paid, `totals` per currency."""

    batch_id: uuid.UUID
    created_at: datetime
    created_by: str  # the actor who exported it
    lines: int
    totals: dict[str, int]


@dataclass(frozen=True, slots=True)
class PayoutBatchDetail:
    """One batch with its lines (one per program, payee and currency, as in its CSV)."""

    batch_id: uuid.UUID
    created_at: datetime
    created_by: str
    lines: tuple[PayoutLine, ...]
    totals: dict[str, int]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def csv_cell(value: object) -> str:
    """A value as a CSV cell that no spreadsheet runs as a formula (module docstring)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


FORMATS = ("csv", "paypal", "wise")
# ISO 4217 minor units where they are not 2 (as tracker.web.review.filters shows money).
EXPONENTS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                              "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
             **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
             **dict.fromkeys(("CLF", "UYW"), 4)}
# PayPal's currency codes (developer.paypal.com, "Currency codes"); these it pays in whole units.
PAYPAL_CURRENCIES = ("AUD", "BRL", "CAD", "CNY", "CZK", "DKK", "EUR", "HKD", "HUF", "ILS",
                     "JPY", "MYR", "MXN", "TWD", "NZD", "NOK", "PHP", "PLN", "GBP", "RUB",
                     "SGD", "SEK", "CHF", "THB", "USD")
PAYPAL_WHOLE = ("HUF", "JPY", "TWD")
PAYPAL_MAX_ROWS = 5_000
WISE_HEADER = ("name", "recipientEmail", "paymentReference", "receiverType", "amountCurrency",
               "amount", "sourceCurrency", "targetCurrency")
WISE_MAX_ROWS = 1_000


class PayoutFormatError(ValueError):
    """The batch cannot be written in that format (the message says why)."""


def major_units(amount: int, currency: str) -> str:
    """Minor units as a decimal in major units, by the currency's ISO 4217 exponent:
    major_units(2000, "USD") is "20.00", (2000, "JPY") "2000", (2000, "KWD") "2.000"."""
    places = EXPONENTS.get(currency, 2)
    major, minor = divmod(abs(amount), 10**places)
    sign = "-" if amount < 0 else ""
    return f"{sign}{major}" + (f".{minor:0{places}d}" if places else "")


def render(fmt: str, batch_id: uuid.UUID | None, lines: list[PayoutLine]) -> str:
    """The batch in format `fmt` (FORMATS; module docstring); PayoutFormatError when the
    batch does not fit the format's rules."""
    if fmt == "csv":
        return payout_csv(batch_id, lines)
    if fmt == "paypal":
        return paypal_csv(batch_id, lines)
    if fmt == "wise":
        return wise_csv(batch_id, lines)
    raise PayoutFormatError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def _short(batch_id: uuid.UUID | None) -> str:
    return "" if batch_id is None else batch_id.hex[:8]


def paypal_csv(batch_id: uuid.UUID | None, lines: list[PayoutLine]) -> str:
    """PayPal Payouts Web's file (module docstring): no header, one row per payee."""
    currencies = sorted({ln.currency for ln in lines})
    if len(currencies) > 1:
        raise PayoutFormatError(
            f"PayPal takes one currency per file and this batch pays {', '.join(currencies)}: "
            "ask for one currency at a time (GET /api/v1/payouts/{batch_id}"
            "?format=paypal&currency=...)")
    if len(lines) > PAYPAL_MAX_ROWS:
        raise PayoutFormatError(f"PayPal takes at most {PAYPAL_MAX_ROWS} payments per file; "
                                f"this batch has {len(lines)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for line in lines:
        if line.currency not in PAYPAL_CURRENCIES:
            raise PayoutFormatError(f"PayPal does not pay in {line.currency}")
        amount = major_units(line.amount, line.currency)
        if line.currency in PAYPAL_WHOLE:
            whole, _, fraction = amount.partition(".")
            if fraction.strip("0"):
                raise PayoutFormatError(
                    f"PayPal pays {line.currency} in whole units only; {line.payee} is owed "
                    f"{amount}")
            amount = whole
        note = f"Referral reward ({line.program})" if line.program else "Referral reward"
        item = f"rg-{_short(batch_id)}-{min(line.reward_ids, default=0)}"
        writer.writerow([csv_cell(v) for v in (line.payee, amount, line.currency, item, note,
                                               "PAYPAL")])
    return out.getvalue()


def wise_csv(batch_id: uuid.UUID | None, lines: list[PayoutLine]) -> str:
    """Wise's batch payments file, "Send by email" template (module docstring)."""
    if len(lines) > WISE_MAX_ROWS:
        raise PayoutFormatError(f"Wise takes at most {WISE_MAX_ROWS} transfers per batch file; "
                                f"this batch has {len(lines)}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(WISE_HEADER)
    reference = f"RG{_short(batch_id)}".upper()
    for line in lines:
        writer.writerow([csv_cell(v) for v in (
            line.payee, line.payee, reference, "PRIVATE", "target",
            major_units(line.amount, line.currency), line.currency, line.currency)])
    return out.getvalue()


def payout_csv(batch_id: uuid.UUID | None, lines: list[PayoutLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAYOUT_HEADER)
    for line in lines:
        writer.writerow([csv_cell(v) for v in (batch_id, line.payee, line.amount, line.currency,
                                               ";".join(str(i) for i in line.reward_ids),
                                               line.program)])
    return out.getvalue()


async def export_payouts(conn: asyncpg.Connection, actor: str,
                         write: Callable[[str], None], *, fmt: str = "csv"
                         ) -> tuple[uuid.UUID | None, list[PayoutLine]]:
    """Pay every payee with approved rewards and a positive balance, as one batch.

    `write` receives the batch's text in format `fmt` (FORMATS) inside the transaction; if it
    raises, nothing is paid, and a batch the format cannot carry (PayoutFormatError) is
    refused before anything is written. With nothing to pay it receives the format's empty
    file (the header alone; nothing for PayPal's) and no batch is recorded.
    """
    if fmt not in FORMATS:
        raise PayoutFormatError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    async with conn.transaction():
        await queries.xact_lock(conn, PAYOUT_LOCK)
        rows = await queries.approved_rewards(conn)
        groups: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        for r in rows:
            groups[(r.program_id, r.payee, r.currency)].append(r.id)
        balances = {(b.program_id, b.payee, b.currency): b.amount
                    for b in await queries.balances(conn, list(groups))}
        # A payee whose clawbacks exceed their earnings is not paid; their approved rewards
        # wait for a later batch, when new earnings cover the debt.
        slugs = await queries.program_slugs(conn, sorted({pid for pid, _, _ in groups}))
        lines = [PayoutLine(pid, payee, balances.get((pid, payee, cur), 0), cur, tuple(ids),
                            slugs.get(pid, ""))
                 for (pid, payee, cur), ids in groups.items()
                 if balances.get((pid, payee, cur), 0) > 0]
        if not lines:
            write(render(fmt, None, []))
            return None, []
        # Approved rewards of nothing (a cap used up) whose payee gets no line: settled with
        # this batch, so they do not wait for a payment that will never come.
        paying = {(ln.program_id, ln.payee, ln.currency) for ln in lines}
        settled = [r.id for r in rows if r.amount == 0
                   and (r.program_id, r.payee, r.currency) not in paying]
        batch_id = uuid.uuid4()
        text = render(fmt, batch_id, lines)  # refused here, before anything is paid
        totals: dict[str, int] = defaultdict(int)
        for line in lines:
            totals[line.currency] += line.amount
        await queries.insert_batch(conn, batch_id, actor, len(lines), totals)
        await queries.insert_payouts(conn, batch_id, actor,
                                     [(ln.program_id, ln.payee, ln.currency, -ln.amount)
                                      for ln in lines])
        paid = [i for ln in lines for i in ln.reward_ids] + settled
        updated = await queries.mark_paid(conn, paid, batch_id)
        if updated != len(paid):  # cannot happen under the lock; refuse rather than guess
            raise RuntimeError("rewards changed during the payout; nothing was paid")
        await webhooks.enqueue(conn, "reward.paid", paid)
        await webhooks.enqueue_payout(conn, batch_id)
        await audit.record(conn, actor=actor, action="payout.export", object_type="payout_batch",
                    object_id=str(batch_id), details={"lines": len(lines), "totals": totals,
                                                      "rewards": len(paid),
                                                      "settled_at_zero": len(settled)})
        write(text)
    return batch_id, lines


async def list_batches(conn: asyncpg.Connection, *, program_id: int | None = None,
                       limit: int = 100, before: str | None = None) -> list[PayoutBatch]:
    """Batches, newest first; with `program_id` only those that paid someone of that
    program (their totals stay the whole batch's). `before`: a batch id (the last one of the
    previous page): only batches older than it; an unknown or malformed one gives none."""
    after: uuid.UUID | None = None
    if before is not None:
        try:
            after = uuid.UUID(before)
        except ValueError:
            return []
    rows = await queries.payout_batches(conn, program_id=program_id, limit=limit, before=after)
    return [PayoutBatch(r.id, r.created_at, r.actor, r.lines, r.totals) for r in rows]


async def get_batch(conn: asyncpg.Connection, batch_id: str | uuid.UUID) -> PayoutBatchDetail:
    """One batch with its lines; NotFound when there is none (or `batch_id` is no UUID)."""
    try:
        key = batch_id if isinstance(batch_id, uuid.UUID) else uuid.UUID(batch_id)
    except ValueError:
        raise NotFound("payout batch") from None
    batch = await queries.payout_batch(conn, key)
    if batch is None:
        raise NotFound("payout batch")
    lines = tuple(PayoutLine(ln.program_id, ln.payee, ln.amount, ln.currency, ln.reward_ids,
                             ln.program)
                  for ln in await queries.payout_batch_lines(conn, key))
    return PayoutBatchDetail(batch.id, batch.created_at, batch.actor, lines, batch.totals)


def batch_csv(batch: PayoutBatchDetail, fmt: str = "csv", currency: str | None = None) -> str:
    """The file of a stored batch in format `fmt` (the generic CSV: the same columns and
    escaping as its export); with `currency`, only its lines in that currency (PayPal takes
    one currency per file)."""
    lines = [ln for ln in batch.lines if currency is None or ln.currency == currency]
    return render(fmt, batch.batch_id, lines)
