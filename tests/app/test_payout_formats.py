"""Payout batches in the bulk-upload formats of PayPal Payouts Web and Wise batch payments
(tracker.finance.payouts), from the library, over HTTP and from `refguard payouts export`.

Each file is parsed back and checked against its format's rules: PayPal's has no header and
six columns (recipient, amount, currency, Customer ID, note, wallet), one currency per file;
Wise's "Send by email" template has its header and eight columns. Amounts are in major units
with the currency's ISO 4217 exponent."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import ClientFactory, auth
from tests.shop import Shop
from tracker.finance.clearance import release
from tracker.finance.payouts import (
    PAYOUT_HEADER,
    WISE_HEADER,
    PayoutFormatError,
    PayoutLine,
    export_payouts,
    major_units,
    paypal_csv,
    render,
    wise_csv,
)

BATCH = uuid.UUID("0123abcd-0000-4000-8000-000000000000")
TEN_PERCENT = {"beneficiary": "referrer", "on": "purchase", "percent": 10}


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _line(payee: str, amount: int, currency: str, ids: tuple[int, ...] = (7,)) -> PayoutLine:
    return PayoutLine(1, payee, amount, currency, ids, "acme")


def test_amounts_in_major_units_by_iso_4217_exponent() -> None:
    assert major_units(2000, "USD") == "20.00"
    assert major_units(5, "EUR") == "0.05"
    assert major_units(2000, "JPY") == "2000"
    assert major_units(2000, "KWD") == "2.000"
    assert major_units(1, "BHD") == "0.001"
    assert major_units(-1500, "GBP") == "-15.00"


def test_paypal_payouts_web_file() -> None:
    text = paypal_csv(BATCH, [_line("jo@example.com", 2000, "USD", (7, 9)),
                              _line("+15551234567", 5, "USD", (8,)),
                              _line("=HYPERLINK(\"http://x\")", 123456, "USD", (11,))])
    rows = _rows(text)
    assert len(rows) == 3  # no header row
    assert all(len(r) == 6 for r in rows)
    assert [r[0] for r in rows] == ["jo@example.com", "+15551234567",
                                    "'=HYPERLINK(\"http://x\")"]  # defused, a phone kept
    assert [r[1] for r in rows] == ["20.00", "0.05", "1234.56"]
    assert all(re.fullmatch(r"[0-9]+\.[0-9]{2}", r[1]) for r in rows)
    assert {r[2] for r in rows} == {"USD"}
    assert [r[3] for r in rows] == ["rg-0123abcd-7", "rg-0123abcd-8", "rg-0123abcd-11"]
    assert {r[4] for r in rows} == {"Referral reward (acme)"}
    assert {r[5] for r in rows} == {"PAYPAL"}
    # Currencies PayPal pays in whole units: no decimals, and never a fraction dropped.
    assert _rows(paypal_csv(BATCH, [_line("a@x.test", 2000, "JPY")]))[0][1:3] == [
        "2000", "JPY"]
    assert _rows(paypal_csv(BATCH, [_line("a@x.test", 150000, "HUF")]))[0][1] == "1500"
    with pytest.raises(PayoutFormatError, match="whole units"):
        paypal_csv(BATCH, [_line("a@x.test", 150050, "HUF")])
    # One currency per file, PayPal's currencies only, at most 5,000 rows.
    with pytest.raises(PayoutFormatError, match="one currency per file"):
        paypal_csv(BATCH, [_line("a@x.test", 1, "USD"), _line("b@x.test", 1, "EUR")])
    with pytest.raises(PayoutFormatError, match="does not pay in KWD"):
        paypal_csv(BATCH, [_line("a@x.test", 1000, "KWD")])
    with pytest.raises(PayoutFormatError, match="5000"):
        paypal_csv(BATCH, [_line(f"p{i}@x.test", 1, "USD") for i in range(5001)])
    assert paypal_csv(None, []) == ""


def test_wise_batch_file() -> None:
    text = wise_csv(BATCH, [_line("jo@example.com", 2000, "EUR"),
                            _line("ken@example.com", 2000, "JPY"),
                            _line("@SUM(A1)", 2000, "KWD")])
    header, *rows = _rows(text)
    assert header == list(WISE_HEADER) == [
        "name", "recipientEmail", "paymentReference", "receiverType", "amountCurrency",
        "amount", "sourceCurrency", "targetCurrency"]
    assert all(len(r) == len(header) for r in rows)
    records = [dict(zip(header, r, strict=True)) for r in rows]
    assert [(r["name"], r["recipientEmail"]) for r in records] == [
        ("jo@example.com", "jo@example.com"), ("ken@example.com", "ken@example.com"),
        ("'@SUM(A1)", "'@SUM(A1)")]
    assert [(r["amount"], r["sourceCurrency"], r["targetCurrency"]) for r in records] == [
        ("20.00", "EUR", "EUR"), ("2000", "JPY", "JPY"), ("2.000", "KWD", "KWD")]
    assert {(r["paymentReference"], r["receiverType"], r["amountCurrency"])
            for r in records} == {("RG0123ABCD", "PRIVATE", "target")}
    assert re.fullmatch(r"[A-Z0-9]{1,10}", records[0]["paymentReference"])
    with pytest.raises(PayoutFormatError, match="1000"):
        wise_csv(BATCH, [_line(f"p{i}@x.test", 1, "USD") for i in range(1001)])
    assert _rows(wise_csv(None, [])) == [list(WISE_HEADER)]
    with pytest.raises(PayoutFormatError, match="unknown format"):
        render("xls", BATCH, [])


async def _two_currencies(shop: Shop) -> None:
    """alice is owed 5.00 USD and 500 JPY, bob 10.00 USD (10% of their referees' purchases)."""
    await shop.referrer("alice")
    await shop.referrer("bob")
    await shop.buy("alice", "p1", "c1", amount=5000, currency="USD")
    await shop.buy("alice", "p2", "c2", amount=5000, currency="JPY")
    await shop.buy("bob", "p3", "c3", amount=10000, currency="USD")
    await release(shop.conn)
    statuses = await shop.conn.fetch("SELECT status FROM rewards")
    assert [r["status"] for r in statuses] == ["approved"] * 3


async def test_a_batch_over_http_in_each_format(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [TEN_PERCENT]}})
    await _two_currencies(shop)
    written: list[str] = []
    batch_id, _lines = await export_payouts(conn, "finance:test", written.append)
    assert batch_id is not None
    finance = auth(tokens["finance"])
    url = f"/api/v1/payouts/{batch_id}"

    async def get(query: str, **headers: str) -> tuple[int, str, str]:
        resp = await shop.client.get(url + query, headers={**finance, **headers})
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    # The generic CSV is what the export wrote, as before.
    status, kind, text = await get("", Accept="text/csv")
    assert (status, kind.split(";")[0], text) == (200, "text/csv", written[0])
    assert _rows(text)[0] == list(PAYOUT_HEADER)
    assert (await get("?format=csv"))[2] == written[0]
    # PayPal: one currency per file.
    status, _, text = await get("?format=paypal")
    assert status == 422 and "one currency per file" in text
    status, kind, text = await get("?format=paypal&currency=USD", Accept="text/csv")
    assert (status, kind.split(";")[0]) == (200, "text/csv")
    assert [r[:3] for r in _rows(text)] == [["alice", "5.00", "USD"], ["bob", "10.00", "USD"]]
    status, _, text = await get("?format=paypal&currency=JPY")
    assert status == 200 and [r[:3] for r in _rows(text)] == [["alice", "500", "JPY"]]
    assert _rows(text)[0][3].startswith(f"rg-{batch_id.hex[:8]}-")
    # Wise: all currencies in one file.
    status, _, text = await get("?format=wise")
    header, *rows = _rows(text)
    assert status == 200 and header == list(WISE_HEADER)
    assert sorted((r[0], r[5], r[6], r[7]) for r in rows) == [
        ("alice", "5.00", "USD", "USD"), ("alice", "500", "JPY", "JPY"),
        ("bob", "10.00", "USD", "USD")]
    # JSON stays JSON; bad parameters are 422.
    resp = await shop.client.get(url, headers=finance)
    assert resp.status == 200 and (await resp.json())["batch_id"] == str(batch_id)
    for bad in ("?format=xls", "?format=", "?format=wise&currency=usd",
                "?format=wise&currency=DOLLARS"):
        assert (await get(bad))[0] == 422, bad


async def test_payouts_export_command_formats(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [TEN_PERCENT]}})
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "cli")}

    async def refguard(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tracker", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    empty = tmp_path / "empty.csv"
    code, _, err = await refguard("payouts", "export", "--out", str(empty), "--format", "paypal")
    assert code == 0 and empty.read_text() == "", err
    await _two_currencies(shop)
    # PayPal cannot take two currencies in one file: refused, nothing paid, no file.
    out = tmp_path / "paypal.csv"
    code, _, err = await refguard("payouts", "export", "--out", str(out), "--format", "paypal")
    assert code == 2 and "one currency per file" in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'approved'") == 3
    code, _, err = await refguard("payouts", "export", "--out", str(out), "--format", "bogus")
    assert code == 2
    # Wise takes them: the batch is paid and the file is Wise's.
    out = tmp_path / "wise.csv"
    code, said, err = await refguard("payouts", "export", "--out", str(out), "--format", "wise")
    assert code == 0, err
    assert "external id" in said
    header, *rows = _rows(out.read_text())
    assert header == list(WISE_HEADER) and len(rows) == 3
    assert sorted(r[5] for r in rows) == ["10.00", "5.00", "500"]
    assert await conn.fetchval("SELECT count(*) FROM rewards WHERE status = 'paid'") == 3
    assert (out.stat().st_mode & 0o777) == 0o600
