"""The /api surface: authentication and roles, validation, errors, pagination, OpenAPI."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.helpers import auth, make_link, wait_for_clicks
from tracker.web.api.openapi import document

Client = TestClient[web.Request, web.Application]


def api_routes(client: Client) -> list[tuple[str, str, frozenset[str]]]:
    """(method, path, roles) of every authenticated /api route, read from the router."""
    out = []
    for app in [client.app] + [r._app for r in client.app.router.resources()
                               if hasattr(r, "_app")]:
        for route in app.router.routes():
            roles = getattr(route.handler, "roles", None)
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter")
            if roles is None and app is not client.app and route.method not in ("*", "HEAD") \
                    and path != "/api/v1/openapi.json":
                raise AssertionError(f"{route.method} {path} is an API route without a role")
            if roles is None or route.method == "HEAD" or (route.method, path, roles) in out:
                continue
            out.append((route.method, path, roles))
    return out


def concrete(path: str) -> str:
    return (path.replace("{slug}", "acme").replace("{code}", "alice1").replace("{reward_id}", "1")
            .replace("{customer_id}", "c1").replace("{token_id}", "999")
            .replace("{batch_id}", "00000000-0000-0000-0000-000000000000"))


async def test_every_api_route_demands_a_token_of_the_right_role(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    routes = api_routes(client)
    # 20, the tokens' list and revoke (issue 12 item 5), the secret's rotation (item 18),
    # payout batches (2) and the decisions report (issue 14), the asks list, the candidates
    # report, customers' events and shares (issue 15), the experiments, economics and
    # breakdown reports (issue 16)
    assert len(routes) == 35
    for method, path, roles in routes:
        url = concrete(path)
        resp = await client.request(method, url, json={})
        assert resp.status == 401, (method, path)
        body = await resp.json()
        assert body["error"]["code"] == "unauthorized"
        resp = await client.request(method, url, json={},
                                    headers=auth("rg_" + "x" * 43))
        assert resp.status == 401, (method, path)
        resp = await client.request(method, url, json={},
                                    headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert resp.status == 401, (method, path)
        for role, token in tokens.items():
            resp = await client.request(method, url, json={}, headers=auth(token))
            if role in roles:
                assert resp.status not in (401, 403), (method, path, role)
            else:
                assert resp.status == 403, (method, path, role, resp.status)


async def test_revoked_token_is_refused(client: Client, tokens: dict[str, str],
                                        conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE role = 'viewer'")
    resp = await client.get("/api/v1/programs", headers=auth(tokens["viewer"]))
    assert resp.status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "Bad Slug", "name": "x", "destination_domains": ["a.test"]}, "slug"),
        ({"slug": "ok", "destination_domains": ["a.test"]}, "name"),
        ({"slug": "ok", "name": "x", "destination_domains": []}, "destination_domains"),
        ({"slug": "ok", "name": "x", "destination_domains": ["http://a.test/x"]},
         "destination_domains"),
        ({"slug": "ok", "name": "x", "destination_domains": "a.test"}, "destination_domains"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"attribution_model": "magic"}}, "attribution_model"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"review_at": 0.95, "reject_at": 0.9}}, "review_at"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"hold_days": "30"}}, "hold_days"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"time_decay_half_life_days": 0}}, "time_decay_half_life_days"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"reward": {"rules": [{"beneficiary": "referrer", "on": "purchase",
                                              "flat": 100, "percent": 5}]}}}, "reward"),
        ({"slug": "ok", "name": "x", "destination_domains": ["a.test"],
          "settings": {"fallback_url": "https://evil.test/"}}, "fallback_url"),
    ],
)
async def test_program_validation(client: Client, tokens: dict[str, str], body: dict[str, Any],
                                  field: str) -> None:
    resp = await client.post("/api/v1/programs", json=body, headers=auth(tokens["admin"]))
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid"
    assert error["field"] == field


async def test_program_defaults_and_duplicate_slug(client: Client, tokens: dict[str, str]) -> None:
    body = {"slug": "acme", "name": "Acme", "destination_domains": ["Acme.TEST"],
            "settings": {"reward": {"currency": "EUR", "rules": [
                {"beneficiary": "referrer", "on": "purchase", "flat": 2000}]}}}
    resp = await client.post("/api/v1/programs", json=body, headers=auth(tokens["admin"]))
    assert resp.status == 201
    program = await resp.json()
    assert program["destination_domains"] == ["acme.test"]
    assert program["settings"]["attribution_model"] == "last_touch"
    assert program["settings"]["attribution_window_days"] == 30
    assert program["settings"]["reward"]["currency"] == "EUR"
    resp = await client.post("/api/v1/programs", json=body, headers=auth(tokens["admin"]))
    assert resp.status == 409


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'"text"'],
)
async def test_bad_bodies_are_400(client: Client, tokens: dict[str, str], raw: bytes) -> None:
    resp = await client.post("/api/v1/programs", data=raw,
                             headers={**auth(tokens["admin"]), "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"


async def test_oversized_body_is_413(client: Client, tokens: dict[str, str]) -> None:
    body = io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}")
    resp = await client.post("/api/v1/programs", data=body,
                             headers={**auth(tokens["admin"]), "Content-Type": "application/json"})
    assert resp.status == 413


async def test_unknown_api_route_is_json_404(client: Client) -> None:
    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "destination",
    [
        "https://evil.test/",
        "https://acme.test.evil.test/",
        "https://acme.test@evil.test/",
        "https://user:pw@acme.test/",
        "//evil.test/",
        "javascript:alert(1)",
        "ftp://acme.test/",
        "https://acme.test\\@evil.test/",
        "https://evilacme.test/",
        "https://acme.test/ space",
        "https://acme.test:99999/",
    ],
)
async def test_link_destination_must_be_on_program_domains(
    client: Client, tokens: dict[str, str], destination: str
) -> None:
    await make_link(client, tokens)
    resp = await client.post(
        "/api/v1/links",
        json={"program": "acme", "referrer": "alice", "destination": destination},
        headers=auth(tokens["integration"]),
    )
    assert resp.status == 422, destination
    resp = await client.patch("/api/v1/links/alice1", json={"destination": destination},
                              headers=auth(tokens["integration"]))
    assert resp.status == 422, destination


async def test_link_defaults_generated_code_and_conflicts(
    client: Client, tokens: dict[str, str]
) -> None:
    link = await make_link(client, tokens, code=None, destination="https://www.acme.test/p")
    assert len(link["code"]) == 8
    assert link["url"].endswith(f"/r/{link['code']}")
    resp = await client.post("/api/v1/links", json={"program": "acme", "referrer": "alice"},
                             headers=auth(tokens["integration"]))
    assert resp.status == 201
    assert (await resp.json())["destination"] == "https://acme.test/"
    resp = await client.post(
        "/api/v1/links", json={"program": "acme", "referrer": "alice", "code": link["code"]},
        headers=auth(tokens["integration"]),
    )
    assert resp.status == 409
    resp = await client.post("/api/v1/links", json={"program": "acme", "referrer": "nobody"},
                             headers=auth(tokens["integration"]))
    assert resp.status == 404
    resp = await client.post("/api/v1/links",
                             json={"program": "acme", "referrer": "alice", "code": "no/slash"},
                             headers=auth(tokens["integration"]))
    assert resp.status == 422


async def test_referrers_are_idempotent_and_emails_are_hashed(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    body = {"program": "acme", "external_id": "bob", "email": "Bob@Example.com"}
    first = await client.post("/api/v1/referrers", json=body, headers=auth(tokens["integration"]))
    again = await client.post("/api/v1/referrers", json=body, headers=auth(tokens["integration"]))
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    stored = await conn.fetchval("SELECT email_hash FROM referrers WHERE external_id = 'bob'")
    assert isinstance(stored, bytes) and len(stored) == 32
    dump = " ".join(str(v) for r in await conn.fetch("SELECT * FROM referrers") for v in r.values())
    assert "example.com" not in dump.lower()
    for bad in ({"program": "acme", "external_id": "x" * 129},
                {"program": "acme", "external_id": "a\nb"},
                {"program": "acme", "external_id": 5},
                {"program": "acme", "external_id": "c", "email": "not-an-email"}):
        resp = await client.post("/api/v1/referrers", json=bad,
                                 headers=auth(tokens["integration"]))
        assert resp.status == 422, bad
    resp = await client.post("/api/v1/referrers", json={"program": "nope", "external_id": "z"},
                             headers=auth(tokens["integration"]))
    assert resp.status == 404


async def test_referrers_carry_an_optional_display_name(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    headers = auth(tokens["integration"])
    body = {"program": "acme", "external_id": "carol", "name": "  Carol Åberg  "}
    resp = await client.post("/api/v1/referrers", json=body, headers=headers)
    assert resp.status == 201 and (await resp.json())["name"] == "Carol Åberg"
    # Left out, the name stays; given again, it replaces the stored one.
    resp = await client.post("/api/v1/referrers", json={"program": "acme", "external_id": "carol"},
                             headers=headers)
    assert resp.status == 200 and (await resp.json())["name"] == "Carol Åberg"
    resp = await client.post("/api/v1/referrers", json=body | {"name": "C. Åberg"},
                             headers=headers)
    assert resp.status == 200 and (await resp.json())["name"] == "C. Åberg"
    listed = await (await client.get("/api/v1/referrers?program=acme",
                                     headers=auth(tokens["viewer"]))).json()
    names = {r["external_id"]: r["name"] for r in listed["items"]}
    assert names["carol"] == "C. Åberg" and names["alice"] is None
    for bad in ("", "   ", "x" * 201, "a\nb", "tab\there", 5, ["Carol"]):
        resp = await client.post("/api/v1/referrers", json=body | {"name": bad}, headers=headers)
        assert resp.status == 422, bad
        assert (await resp.json())["error"]["field"] == "name"
    resp = await client.post("/api/v1/referrers", json=body | {"name": "y" * 200}, headers=headers)
    assert resp.status == 200
    stored = await conn.fetchval("SELECT name FROM referrers WHERE external_id = 'carol'")
    assert stored == "y" * 200


async def test_visit_log_pages_in_time_order_with_filters(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection
) -> None:
    await make_link(client, tokens)
    await make_link(client, tokens, referrer="bob", code="bob1")
    for i in range(7):
        await client.get("/r/alice1" if i % 2 == 0 else "/r/bob1", allow_redirects=False,
                         headers={"User-Agent": f"Mozilla/5.0 test {i}"})
    assert await wait_for_clicks(conn, 7) == 7
    viewer = auth(tokens["viewer"])
    seen: list[dict[str, Any]] = []
    url = "/api/v1/clicks?program=acme&limit=3"
    while url:
        resp = await client.get(url, headers=viewer)
        assert resp.status == 200
        page = await resp.json()
        seen.extend(page["items"])
        url = f"/api/v1/clicks?program=acme&limit=3&cursor={page['next']}" if page["next"] else ""
    assert len(seen) == 7
    assert [c["ts"] for c in seen] == sorted(c["ts"] for c in seen)
    assert len({c["click_id"] for c in seen}) == 7
    click = seen[0]
    assert set(click) >= {"click_id", "ts", "code", "referrer", "visitor_id", "ip", "country",
                          "asn", "ua", "fingerprint", "flags", "bot_rule"}
    assert set(click["flags"]) == {"bot", "duplicate", "anonymous", "hosting"}
    assert click["ip"] == "127.0.0.1"
    assert len(click["fingerprint"]) == 32
    resp = await client.get("/api/v1/clicks?program=acme&referrer=bob", headers=viewer)
    assert {c["code"] for c in (await resp.json())["items"]} == {"bob1"}
    resp = await client.get("/api/v1/clicks?program=acme&code=alice1", headers=viewer)
    assert len((await resp.json())["items"]) == 4
    resp = await client.get(f"/api/v1/clicks?program=acme&since={seen[5]['ts']}", headers=viewer)
    assert len((await resp.json())["items"]) >= 2
    for bad in ("limit=0", "limit=1001", "limit=x", "limit=", "limit=&limit=5",
                "limit=5&limit=6", "cursor=%%%", "cursor=YWJj", "since=yesterday",
                "program=acme", "code=a&code=b"):
        resp = await client.get(f"/api/v1/clicks?program=acme&{bad}", headers=viewer)
        assert resp.status == 422, bad
    resp = await client.get("/api/v1/clicks", headers=viewer)
    assert resp.status == 422
    resp = await client.get("/api/v1/clicks?program=acme&referrer=ghost", headers=viewer)
    assert resp.status == 404


async def test_lists_of_programs_referrers_links_page(
    client: Client, tokens: dict[str, str]
) -> None:
    for i in range(3):
        await make_link(client, tokens, referrer=f"r{i}", code=f"code{i}")
    viewer = auth(tokens["viewer"])
    resp = await client.get("/api/v1/referrers?program=acme&limit=2", headers=viewer)
    page = await resp.json()
    assert len(page["items"]) == 2 and page["next"]
    resp = await client.get(f"/api/v1/referrers?program=acme&limit=2&cursor={page['next']}",
                            headers=viewer)
    page = await resp.json()
    assert [r["external_id"] for r in page["items"]] == ["r2"] and page["next"] is None
    resp = await client.get("/api/v1/links?program=acme&referrer=r1", headers=viewer)
    assert [link["code"] for link in (await resp.json())["items"]] == ["code1"]
    resp = await client.get("/api/v1/programs", headers=viewer)
    assert [p["slug"] for p in (await resp.json())["items"]] == ["acme"]


async def test_openapi_documents_every_api_route(client: Client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc == document()
    for method, path, _roles in api_routes(client):
        assert path in doc["paths"], path
        assert method.lower() in doc["paths"][path], (method, path)
    assert set(doc["paths"]) == {path for _m, path, _r in api_routes(client)} | {
        "/api/v1/openapi.json"}


async def test_health_ready_and_metrics(client: Client, tokens: dict[str, str]) -> None:
    await make_link(client, tokens)
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["database"] is True
    await client.get("/r/alice1", allow_redirects=False)
    text = ""
    for _ in range(40):  # the redirect counters are folded in once a second
        await asyncio.sleep(0.25)
        text = await (await client.get("/metrics")).text()
        if 'route="redirect",status="302"' in text:
            break
    for name in ("refguard_http_requests_total", "refguard_redirect_seconds_bucket",
                 "refguard_clicks_total", "refguard_journal_backlog_clicks",
                 "refguard_flush_seconds", "refguard_database_up"):
        assert name in text
    assert 'route="redirect",status="302"' in text
    assert "alice1" not in text  # never a link code as a label


async def test_wrong_method_is_a_json_405(client: Client, tokens: dict[str, str]) -> None:
    resp = await client.delete("/api/v1/programs", headers=auth(tokens["admin"]))
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"
    assert resp.headers["Allow"] == "GET, HEAD, POST"


def test_no_middleware_slows_the_redirect(client: Client) -> None:
    apps = [client.app, *(r._app for r in client.app.router.resources() if hasattr(r, "_app"))]
    assert all(not app.middlewares for app in apps)


async def test_the_links_gauge_follows_new_links(client: Client, tokens: dict[str, str]) -> None:
    async def cached() -> float:
        text = await (await client.get("/metrics")).text()
        line = next(x for x in text.splitlines() if x.startswith("refguard_links_cached"))
        return float(line.rsplit(" ", 1)[1])

    await make_link(client, tokens, code="first")
    assert await cached() == 1
    await make_link(client, tokens, code="second")
    assert await cached() == 2


async def test_a_choice_must_be_one_of_its_values_even_empty(
    client: Client, tokens: dict[str, str]
) -> None:
    await make_link(client, tokens)
    viewer = auth(tokens["viewer"])
    for url in ("/api/v1/rewards?status=", "/api/v1/rewards?status=paidd",
                "/api/v1/rewards?status=paid&status=paid", "/api/v1/rewards?limit=%205",
                "/api/v1/rewards?limit=1_0", "/api/v1/reports/attribution?program=acme&model=",
                "/api/v1/reports/attribution?program=acme&model=lastTouch"):
        resp = await client.get(url, headers=viewer)
        assert resp.status == 422, url
        assert (await resp.json())["error"]["code"]
    assert (await client.get("/api/v1/rewards?status=paid&limit=5", headers=viewer)).status == 200
    resp = await client.get("/api/v1/reports/attribution?program=acme&model=linear",
                            headers=viewer)
    assert resp.status == 200
