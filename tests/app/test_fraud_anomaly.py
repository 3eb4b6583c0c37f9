"""The anomaly detectors (fraud.anomaly, pyod) through the public interfaces: `refguard fraud
scan` names unusual referrers as `anomaly` flags (GET /api/v1/fraud/flags?kind=anomaly), a
watch list that changes no conversion's risk, is kept by incremental scans and keeps the
referrer out of the asks."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import DummyCookieJar

from tests.helpers import ClientFactory, auth, make_settings
from tests.traffic import generate
from tracker.asks.queries import fraud_marks
from tracker.finance.evidence import rings_with
from tracker.intake.conversions import parse_conversion
from tracker.intake.queries import store_conversion
from tracker.scoring import risk
from tracker.scoring.credits import attribute_pending
from tracker.web.app import create_app

# The generator's planted fraudulent referrers (tests.traffic.generate); the rest are organic.
PLANTED = ("self", "ring", "camo", "farmer", "injector", "spammer", "farmhand")


async def stored(conn: asyncpg.Connection) -> dict[int, tuple[float, str, list[float] | None]]:
    return {r["conversion_id"]: (r["score"], r["reasons"], r["features"]) for r in
            await conn.fetch("SELECT conversion_id, score, reasons::text AS reasons, features "
                             "FROM conversion_risk")}


async def test_fraud_scan_names_unusual_referrers_without_changing_any_risk(
    dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    traffic = await generate(conn, organic_referrers=30, organic_customers=900)
    await attribute_pending(conn)
    env = {"REFGUARD_DATABASE_URL": dsn, "REFGUARD_DATA_DIR": str(tmp_path / "cli")}
    out = subprocess.run([sys.executable, "-m", "tracker", "fraud", "scan", "--json"], env=env,
                         capture_output=True, text=True, check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)[0]

    settings = make_settings(tmp_path / "d", dsn)
    client = await aiohttp_client(create_app(settings), cookie_jar=DummyCookieJar())
    resp = await client.get("/api/v1/fraud/flags?program=gen&kind=anomaly",
                            headers=auth(tokens["finance"]))
    assert resp.status == 200
    items = (await resp.json())["items"]
    named = [m["id"] for f in items for m in f["members"]]
    print("\nnamed:", named)
    assert summary["unusual_referrers"] == len(items) >= 1
    # One referrer a flag, each a planted fraudster, no organic referrer.
    assert all(f["kind"] == "anomaly" and f["conversion"] is None and len(f["members"]) == 1
               and f["members"][0]["type"] == "referrer" for f in items)
    assert all(name.startswith(PLANTED) for name in named), named
    for f in items:
        assert 0.9 <= f["score"] <= 1.0
        lead, *furthest = f["reasons"]
        assert lead["code"] == "anomaly" and lead["value"] == f["score"]
        assert furthest and all(r["code"].startswith("anomaly_") and "typical referrer: "
                                in r["message"] and r["value"] is not None
                                and r["threshold"] is not None for r in furthest)
        assert len(f["evidence"]["features"]) == 12

    # The same scan without the detectors stores the very same risks and reasons: no
    # conversion's risk or reward decision depends on them.
    with_flags = await stored(conn)
    monkeypatch.setattr(risk, "anomalous_referrers", lambda *_a, **_k: [])
    await risk.scan(conn, "gen")
    assert await stored(conn) == with_flags
    assert not await conn.fetchval("SELECT count(*) FROM fraud_flags WHERE kind = 'anomaly'")
    monkeypatch.undo()
    await risk.scan(conn, "gen")
    assert await stored(conn) == with_flags
    kept = {r["members"] for r in await conn.fetch(
        "SELECT members::text AS members FROM fraud_flags WHERE kind = 'anomaly'")}
    assert len(kept) == len(items)

    # An incremental scan (a window of new conversions) cannot rank the program's referrers:
    # it keeps the full scan's anomaly flags, as it keeps its rings.
    last = max(traffic.conversions, key=lambda b: str(b["occurred_at"]))
    body = {**last, "event_id": "late", "customer_id": "late-customer"}
    body["occurred_at"] = (parse_conversion(last).occurred_at
                           + timedelta(minutes=5)).isoformat()
    await store_conversion(conn, traffic.program_id, parse_conversion(body), None,
                           source="import")
    await attribute_pending(conn)
    [incremental] = await risk.scan(conn, "gen", incremental=True)
    assert incremental.mode == "incremental" and incremental.conversions >= 1
    assert {r["members"] for r in await conn.fetch(
        "SELECT members::text AS members FROM fraud_flags WHERE kind = 'anomaly'")} == kept

    # The review page lists them with the referrer's rewards, as it lists rings.
    shown = [r for r in (await rings_with(conn, {traffic.program_id: set(named)}))[
        traffic.program_id] if r.kind == "anomaly"]
    assert sorted(r.members[0].id for r in shown) == sorted(named)
    assert all(r.accounts == 1 and r.reasons[0].code == "anomaly" and r.reasons[1].message
               for r in shown)

    # Finance looks first: a referrer on the watch list is not asked to refer more, on the
    # anomaly flag alone (their flagged conversions' flags name them too: gone here).
    await conn.execute("DELETE FROM fraud_flags WHERE kind <> 'anomaly'")
    assert not await conn.fetchval("SELECT count(*) FROM rewards")
    assert await fraud_marks(conn, traffic.program_id, named) == dict.fromkeys(named,
                                                                                 "fraud_flag")
