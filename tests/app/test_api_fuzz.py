"""Schemathesis against the live API on a real database: no 500s, every answer as documented.

The OpenAPI document is the contract integrators code against. Schemathesis generates requests
from it (valid ones, and invalid ones that must be refused with a 4xx), sends them to the app
served on a real port, and checks each answer: never a server error, a documented status and
content type, a body that matches the documented schema, a 405 with an Allow header for a
method a route does not take, and a 401 without credentials. One worker: hypothesis's source
inspection is not thread-safe on Python 3.11 (spurious "AST constructor recursion" errors).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestServer

from tests.helpers import make_settings
from tracker.auth import create_token
from tracker.web.app import create_app

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
            str(Path(sys.executable).parent / "st"), "run",
            str(server.make_url("/api/v1/openapi.json")),
            "--header", f"Authorization: Bearer {admin}", "--checks", ",".join(CHECKS),
            "--max-examples", "25", "--seed", "20261123", "--workers", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    finally:
        await server.close()
    report = out.decode(errors="replace")
    summary = report[report.rfind("SUMMARY"):]
    print("\n" + summary)
    assert proc.returncode == 0, report[:6000]
    assert " passed" in summary and "failed" not in summary
