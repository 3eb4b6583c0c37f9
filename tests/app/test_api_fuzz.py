"""Fuzzing the live app on a real database: no 500s, every answer as documented.

The OpenAPI document is the contract integrators code against. Schemathesis generates requests
from it, sends them to the app served on a real port, and checks each answer: never a server
error, a documented status and content type, a body that matches the documented schema, a 405
with an Allow header for a method a route does not take, and a 401 without credentials. Every
phase runs (explicit examples, the coverage phase's boundary values, random fuzzing, stateful
sequences), in both generation modes: positive data, and negative data (wrong types, missing
fields, values out of range, bad headers) that must be refused with a 4xx
(`negative_data_rejection`). The budget is SCHEMATHESIS_EXAMPLES per operation and phase, with
a fixed seed: about half a minute here (measured: DESIGN section 8 keeps timings out of tests).
One worker: hypothesis's source inspection is not thread-safe on Python 3.11 (spurious "AST
constructor recursion" errors).

What the OpenAPI document cannot describe is fuzzed with hypothesis (issue 12): the signature
header of a conversion (random text, non-ASCII, huge, almost right) and the fingerprint page's
beacon bodies (random JSON, deep nesting, garbage bytes, hostile values under a valid token).
Never a 500; and afterwards the flusher still stores a sane beacon (nothing fuzzed wedged it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import auth, make_link, make_settings, wait_for_clicks
from tracker.auth import create_token
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]
SCHEMATHESIS_EXAMPLES = 60
HYPOTHESIS_EXAMPLES = 300

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "unsupported_method",
          "negative_data_rejection", "missing_required_header", "ignored_auth")


async def test_the_api_keeps_its_openapi_promises(dsn: str, tmp_path: Path,
                                                  conn: asyncpg.Connection) -> None:
    admin, _ = await create_token(conn, "admin", "schemathesis")
    await conn.execute("INSERT INTO programs (slug, name, destination_domains) "
                       "VALUES ('acme', 'Acme', '{acme.test}')")
    server = TestServer(create_app(make_settings(tmp_path / "data", dsn)), host="127.0.0.1")
    await server.start_server()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "st"),
            "--config-file", str(Path(__file__).with_name("schemathesis.toml")), "run",
            str(server.make_url("/api/v1/openapi.json")),
            "--header", f"Authorization: Bearer {admin}", "--checks", ",".join(CHECKS),
            "--phases", "examples,coverage,fuzzing,stateful", "--mode", "all",
            "--max-examples", str(SCHEMATHESIS_EXAMPLES), "--seed", "20261123", "--workers", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    finally:
        await server.close()
    report = out.decode(errors="replace")
    summary = report[report.rfind("SUMMARY"):]
    print("\n" + summary)
    assert proc.returncode == 0, report[:6000]
    assert " passed" in summary and "failed" not in summary


# -- hypothesis: the signature header and the beacon -----------------------------------------

# Any text but control characters (aiohttp's parser refuses those with a 400 before any
# handler sees them), non-ASCII included: sent over a raw socket as UTF-8, as no HTTP client
# library would send it.
_HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=120)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)


def _deep(depth: int, kind: str) -> bytes:
    opening, closing = ("[", "]") if kind == "list" else ('{"a":', "}")
    return (opening * depth + "1" + closing * depth).encode()


def _in_loop(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[Any]], Any]:
    """Run a coroutine on the test's event loop from hypothesis's thread."""
    def run(coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)  # type: ignore[arg-type]
    return run


async def _status(client: Client, url: str, data: bytes, headers: dict[str, str]) -> int:
    resp = await client.post(url, data=data, headers=headers)
    await resp.read()
    return resp.status


async def _raw_status(client: Client, url: str, data: bytes, header: bytes) -> int:
    """POST over a raw socket with `X-Refguard-Signature: <header>`; the answer's status."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(f"POST {url} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                     .encode() + b"X-Refguard-Signature: " + header + b"\r\n\r\n" + data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        writer.close()
    assert line.startswith(b"HTTP/1."), line  # aiohttp's parser answers bad ones in HTTP/1.0
    return int(line.split()[1])


async def test_fuzzed_signature_headers_never_get_a_500(
    client: Client, tokens: dict[str, str],
) -> None:
    await make_link(client, tokens)
    resp = await client.get("/api/v1/programs/acme", headers=auth(tokens["admin"]))
    secret = (await resp.json())["signing_secret"]
    run = _in_loop(asyncio.get_running_loop())
    body = json.dumps({"program": "acme", "event_id": "fz", "type": "signup",
                       "customer_id": "c"}).encode()

    def mac(data: bytes, stamp: int) -> str:
        return hmac.new(secret.encode(), f"{stamp}.".encode() + data, hashlib.sha256).hexdigest()

    headers = st.one_of(
        _HEADER_TEXT,
        st.builds(lambda t, v: f"t={t},v1={v}", st.integers() | _HEADER_TEXT, _HEADER_TEXT),
        # A fresh timestamp, so the v1 values are compared: non-ASCII, wrong length, many.
        st.builds(lambda vs: f"t={int(time.time())}," + ",".join(f"v1={v}" for v in vs),
                  st.lists(_HEADER_TEXT | st.text("0123456789abcdefé", min_size=64,
                                                  max_size=64), max_size=6)),
        st.builds(lambda n, c: f"t={int(time.time())},v1=" + c * n,
                  st.integers(1, 7000), st.sampled_from("aé0,= ")),
    )
    bodies = st.one_of(
        st.just(body), st.binary(max_size=300),
        st.builds(_deep, st.integers(1, 30_000), st.sampled_from(["list", "dict"])),
        _JSON.map(lambda v: json.dumps(v).encode()),
    )

    @settings(max_examples=HYPOTHESIS_EXAMPLES, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(header=headers, data=bodies, sign_it=st.booleans())
    def probe(header: str, data: bytes, sign_it: bool) -> None:
        if sign_it:  # a correct signature over a hostile body: parsed after it verifies
            stamp = int(time.time())
            header = f"t={stamp},v1={mac(data, stamp)}"
        status = run(_raw_status(client, "/api/v1/conversions", data, header.encode()))
        assert status < 500, (header[:200], data[:200])

    await asyncio.to_thread(probe)


async def test_fuzzed_beacons_never_get_a_500_nor_stop_the_flusher(
    client: Client, tokens: dict[str, str], conn: asyncpg.Connection,
) -> None:
    await make_link(client, tokens, settings={"fingerprint": "browser"})

    async def page() -> tuple[str, str]:
        html = await (await client.get("/r/alice1", allow_redirects=False)).text()
        cid, tok = re.search(r'cid:"([^"]+)"', html), re.search(r'tok:"([^"]+)"', html)
        assert cid and tok, html
        return cid.group(1), tok.group(1)

    pages = [await page() for _ in range(4)]
    run = _in_loop(asyncio.get_running_loop())
    signal_values = st.one_of(_JSON, st.text(max_size=80), st.floats(),
                              st.lists(st.text(max_size=40), max_size=12))
    valid = st.builds(
        lambda page, signals: {"cid": page[0], "tok": page[1], **signals},
        st.sampled_from(pages),
        st.dictionaries(st.sampled_from(["tz", "tzo", "sw", "sh", "dpr", "cd", "langs", "wd",
                                         "canvas", "hc", "plat", "x"]), signal_values,
                        max_size=11))
    forged = st.builds(lambda cid, tok: {"cid": cid, "tok": tok},
                       st.sampled_from([p[0] for p in pages]) | _JSON,
                       _JSON | st.text(max_size=40))
    bodies = st.one_of(
        valid.map(lambda v: json.dumps(v).encode()),
        # Python's json writes NaN and Infinity and lone surrogates; browsers' do not.
        valid.map(lambda v: json.dumps({**v, "dpr": float("nan"), "tz": "\ud800"}).encode()),
        forged.map(lambda v: json.dumps(v).encode()),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.builds(_deep, st.integers(1, 2040), st.sampled_from(["list", "dict"])),
        st.binary(max_size=5000),
    )

    @settings(max_examples=HYPOTHESIS_EXAMPLES, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=bodies)
    def probe(data: bytes) -> None:
        status = run(_status(client, "/r/alice1/s", data, {}))
        assert status < 500, data[:300]

    await asyncio.to_thread(probe)
    # The flusher took whatever the fuzz journaled and still stores a sane beacon.
    cid, tok = await page()
    resp = await client.post("/r/alice1/s", data=json.dumps({"cid": cid, "tok": tok,
                                                             "sw": 7}))
    assert resp.status == 204
    assert await wait_for_clicks(conn, len(pages) + 1) == len(pages) + 1
    for _ in range(300):
        stored = await conn.fetchval(
            "SELECT signals::text FROM click_signals WHERE click_id = $1::uuid", cid)
        if stored is not None and json.loads(stored) == {"sw": 7}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the flusher never stored the last beacon")
