"""Payout batches over HTTP: GET /api/v1/payouts (paged) and /api/v1/payouts/{batch_id}
(JSON, or the CSV with `Accept: text/csv`), and the library functions behind them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import ClientFactory, auth, make_link
from tests.shop import Shop
from tracker.errors import NotFound
from tracker.finance.clearance import release
from tracker.finance.payouts import PAYOUT_HEADER, export_payouts, get_batch, list_batches

REFERRER_2000 = {"beneficiary": "referrer", "on": "purchase", "flat": 2000}


async def _export(conn: asyncpg.Connection) -> str:
    written: list[str] = []
    await export_payouts(conn, "finance:test", written.append)
    return written[0]


async def test_batches_listed_paged_and_read_back_as_json_and_csv(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    finance = auth(tokens["finance"])
    empty = await shop.client.get("/api/v1/payouts", headers=finance)
    assert empty.status == 200 and await empty.json() == {"items": [], "next": None}
    await shop.referrer("alice")
    await shop.referrer("bob")
    files = []
    for i in range(3):
        await shop.buy("alice", f"pa{i}", f"ca{i}")
        if i != 1:
            await shop.buy("bob", f"pb{i}", f"cb{i}")
        await release(conn)
        files.append(await _export(conn))
    ids = [next(csv.DictReader(io.StringIO(f)))["batch_id"] for f in files]
    # Newest first, two by two.
    first = await (await shop.client.get("/api/v1/payouts?limit=2", headers=finance)).json()
    assert [b["batch_id"] for b in first["items"]] == ids[::-1][:2] and first["next"]
    rest = await (await shop.client.get(f"/api/v1/payouts?limit=2&cursor={first['next']}",
                                        headers=finance)).json()
    assert [b["batch_id"] for b in rest["items"]] == ids[:1] and rest["next"] is None
    newest = first["items"][0]
    assert newest["created_by"] == "finance:test" and newest["lines"] == 2
    assert newest["totals"] == {"USD": 4000} and newest["created_at"].endswith("Z")
    # One batch: its lines, and its CSV exactly as the export wrote it.
    one = await shop.client.get(f"/api/v1/payouts/{ids[1]}", headers=finance)
    body = await one.json()
    assert body["batch_id"] == ids[1] and body["totals"] == {"USD": 2000}
    [line] = body["lines"]
    assert (line["program"], line["beneficiary"], line["amount"], line["currency"]) == (
        "acme", "alice", 2000, "USD")
    as_csv = await shop.client.get(f"/api/v1/payouts/{ids[2]}",
                                   headers={**finance, "Accept": "text/csv"})
    assert as_csv.status == 200 and as_csv.content_type == "text/csv"
    assert await as_csv.text() == files[2]
    assert files[2].splitlines()[0] == ",".join(PAYOUT_HEADER)
    assert [r["program"] for r in csv.DictReader(io.StringIO(files[2]))] == ["acme", "acme"]
    # By program: acme has all three; another program none.
    by_program = await (await shop.client.get("/api/v1/payouts?program=acme",
                                              headers=finance)).json()
    assert len(by_program["items"]) == 3
    assert (await shop.client.get("/api/v1/payouts?program=nope",
                                  headers=finance)).status == 404
    # Library: the same, for the review page.
    assert [str(b.batch_id) for b in await list_batches(conn, limit=1, before=ids[2])] == [
        ids[1]]
    detail = await get_batch(conn, ids[0])
    assert sorted(ln.payee for ln in detail.lines) == ["alice", "bob"]
    with pytest.raises(NotFound):
        await get_batch(conn, "not-a-uuid")


async def test_payouts_api_refuses_bad_input_and_other_roles(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    finance = auth(tokens["finance"])
    for path, headers, status in (
            ("/api/v1/payouts", auth(tokens["viewer"]), 403),
            ("/api/v1/payouts", auth(tokens["integration"]), 403),
            ("/api/v1/payouts", {}, 401),
            ("/api/v1/payouts?cursor=%%%", finance, 422),
            ("/api/v1/payouts?cursor=YWJj", finance, 422),
            ("/api/v1/payouts?limit=0", finance, 422),
            ("/api/v1/payouts/nope", finance, 404),
            ("/api/v1/payouts/00000000-0000-0000-0000-000000000000", finance, 404),
            ("/api/v1/payouts/" + "a" * 300, finance, 404)):
        resp = await shop.client.get(path, headers=headers)
        assert resp.status == status, (path, await resp.text())
        assert "error" in await resp.json()


async def test_a_formula_payee_is_text_in_the_api_csv(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, tokens: dict[str, str],
    conn: asyncpg.Connection,
) -> None:
    shop = await Shop.open(aiohttp_client, tmp_path, dsn, tokens, conn, {
        "hold_days": 0, "reward": {"rules": [REFERRER_2000]}})
    await make_link(shop.client, tokens, referrer="=1+1", code="evil")
    await shop.buy("evil", "p1", "c1")
    await release(conn)
    batch = next(csv.DictReader(io.StringIO(await _export(conn))))["batch_id"]
    text = await (await shop.client.get(f"/api/v1/payouts/{batch}", headers={
        **auth(tokens["finance"]), "Accept": "text/csv"})).text()
    assert next(csv.DictReader(io.StringIO(text)))["beneficiary"] == "'=1+1"
