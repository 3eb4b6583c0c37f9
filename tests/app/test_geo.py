"""geo/: real MaxMind DB files written with mmdb-writer, in the published record layouts."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bench.geodb import write_db
from geo.reader import GeoError, GeoReader
from tests.helpers import ClientFactory, make_link, make_settings, wait_for_clicks
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.clicks.journal import RawClick
from tracker.web.app import create_app

Client = TestClient[web.Request, web.Application]


def city(iso: str, region: str, name: str) -> dict[str, Any]:
    return {"country": {"iso_code": iso, "names": {"en": iso}},
            "subdivisions": [{"iso_code": region, "names": {"en": region}}],
            "city": {"names": {"en": name}}, "location": {"latitude": 1.0, "longitude": 2.0}}


def asn(number: int, org: str) -> dict[str, Any]:
    return {"autonomous_system_number": number, "autonomous_system_organization": org}


@pytest.fixture
def geo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "geoip"
    folder.mkdir()
    write_db(folder / "GeoLite2-City.mmdb", "GeoLite2-City", {
        "81.2.69.0/24": city("GB", "ENG", "London"),
        "2a02:dd8::/32": city("DE", "BE", "Berlin"),
        "203.0.113.0/24": city("US", "VA", "Ashburn"),
    })
    write_db(folder / "GeoLite2-ASN.mmdb", "GeoLite2-ASN", {
        "81.2.69.0/24": asn(20712, "Andrews & Arnold Ltd"),
        "2a02:dd8::/32": asn(8881, "1&1 Versatel"),
        "203.0.113.0/24": asn(14618, "AMAZON-AES"),
    })
    write_db(folder / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP", {
        "203.0.113.0/24": {"is_anonymous": True, "is_hosting_provider": True},
        "198.51.100.0/24": {"is_anonymous": True, "is_anonymous_vpn": True},
        "2001:db8:dead::/48": {"is_anonymous": True, "is_tor_exit_node": True},
    })
    return folder


def test_ipv4_and_ipv6_country_asn_and_flags(geo_dir: Path) -> None:
    reader = GeoReader(geo_dir)
    london = reader.lookup("81.2.69.160")
    assert (london.country, london.region, london.city) == ("GB", "ENG", "London")
    assert (london.asn, london.as_org) == (20712, "Andrews & Arnold Ltd")
    assert not london.anonymous and not london.hosting
    berlin = reader.lookup("2a02:dd8:1::1")
    assert (berlin.country, berlin.city, berlin.asn) == ("DE", "Berlin", 8881)
    cloud = reader.lookup("203.0.113.7")
    assert (cloud.country, cloud.asn, cloud.hosting, cloud.anonymous) == ("US", 14618, True, True)
    vpn = reader.lookup("198.51.100.20")
    assert vpn.vpn and vpn.anonymous and not vpn.hosting and vpn.country is None
    tor = reader.lookup("2001:db8:dead::5")
    assert tor.tor and tor.anonymous
    assert set(reader.ages_s()) == {"GeoLite2-City.mmdb", "GeoLite2-ASN.mmdb",
                                    "GeoIP2-Anonymous-IP.mmdb"}


@pytest.mark.parametrize("bad", ["", "not-an-ip", "999.1.1.1", "::g", "1.2.3.4\x00", None])
def test_bad_addresses_give_an_empty_answer(geo_dir: Path, bad: str | None) -> None:
    info = GeoReader(geo_dir).lookup(bad)
    assert info.country is None and info.asn is None and not info.anonymous


def test_missing_databases_give_empty_answers(tmp_path: Path) -> None:
    assert GeoReader(None).lookup("81.2.69.160").country is None
    empty = tmp_path / "none"
    empty.mkdir()
    reader = GeoReader(empty)
    assert reader.databases == ()
    assert reader.lookup("81.2.69.160").asn is None


def test_country_database_and_dbip_layout(tmp_path: Path) -> None:
    write_db(tmp_path / "dbip-country-lite.mmdb", "DBIP-Country-Lite",
             {"81.2.69.0/24": {"country": {"iso_code": "FR", "names": {"en": "France"}}}})
    write_db(tmp_path / "dbip-city-lite.mmdb", "DBIP-City-Lite",
             {"81.2.69.0/24": {"country": {"iso_code": "GB"}, "city": {"names": {"en": "Leeds"}},
                               "subdivisions": [{"names": {"en": "England"}}]}})
    info = GeoReader(tmp_path).lookup("81.2.69.1")
    # The city database answers before the country one.
    assert (info.country, info.region, info.city) == ("GB", "England", "Leeds")


def test_a_network_answered_alike_is_kept_by_its_prefix_and_a_narrower_one_is_not(
    geo_dir: Path,
) -> None:
    """lookup(ip, prefix) answers what lookup(ip) answers: a /24 (/48) whose every database
    answers for a network at least as wide is kept by its prefix (the next address of it asks
    no database); one that a database splits finer is asked address by address; a reload
    forgets what was kept."""
    from geo.reader import ip_prefix

    write_db(geo_dir / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP", {
        "81.2.69.16/28": {"is_anonymous": True, "is_anonymous_vpn": True},  # inside London's /24
        "198.51.100.0/24": {"is_anonymous": True, "is_anonymous_vpn": True},
    })
    fresh, reader = GeoReader(geo_dir), GeoReader(geo_dir)
    addresses = ["81.2.69.1", "81.2.69.20", "81.2.69.200", "81.2.69.17", "198.51.100.1",
                 "198.51.100.77", "203.0.113.9", "2a02:dd8:1::1", "2a02:dd8:1::2", "10.0.0.1",
                 "10.0.0.2", "::ffff:81.2.69.20", "::ffff:81.2.69.1"]
    for ip in addresses + addresses[::-1]:
        assert reader.lookup(ip, ip_prefix(ip)) == fresh.lookup(ip), ip
    kept = reader._networks[1]
    assert "81.2.69" not in kept  # the /28 splits it
    assert {"198.51.100", "203.0.113", "2a02:dd8:1::", "10.0.0"} <= set(kept)
    assert kept["198.51.100"].vpn and kept["2a02:dd8:1::"].city == "Berlin"
    write_db(geo_dir / "GeoIP2-Anonymous-IP.mmdb", "GeoIP2-Anonymous-IP", {
        "198.51.100.0/25": {"is_anonymous": True, "is_tor_exit_node": True},
    })
    assert reader.maybe_reload(force=True) and fresh.maybe_reload(force=True)
    for ip in addresses:
        assert reader.lookup(ip, ip_prefix(ip)) == fresh.lookup(ip), ip
    assert reader.lookup("198.51.100.1", "198.51.100").tor
    assert "198.51.100" not in reader._networks[1]


def test_corrupt_database_at_start_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "GeoLite2-City.mmdb").write_bytes(b"\x00" * 4096)
    with pytest.raises(GeoError, match=r"GeoLite2-City\.mmdb"):
        GeoReader(tmp_path)


def test_truncated_database_at_start_is_an_error(geo_dir: Path) -> None:
    path = geo_dir / "GeoLite2-ASN.mmdb"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(GeoError, match="GeoLite2-ASN"):
        GeoReader(geo_dir)


def test_hot_swap_replaces_databases_and_keeps_old_on_corruption(geo_dir: Path) -> None:
    reader = GeoReader(geo_dir, check_interval_s=0)
    assert reader.lookup("81.2.69.160").asn == 20712
    new = geo_dir / "new.tmp"
    write_db(new, "GeoLite2-ASN", {"81.2.69.0/24": asn(64500, "Swapped")})
    os.replace(new, geo_dir / "GeoLite2-ASN.mmdb")
    assert reader.maybe_reload(force=True)
    assert reader.lookup("81.2.69.160").asn == 64500
    # A broken replacement is refused; the previous copy keeps answering.
    (geo_dir / "GeoLite2-ASN.mmdb").write_bytes(b"garbage" * 100)
    reader.maybe_reload(force=True)
    assert reader.lookup("81.2.69.160").asn == 64500
    assert reader.lookup("81.2.69.161").as_org == "Swapped"


def test_in_place_overwrite_does_not_disturb_lookups(geo_dir: Path) -> None:
    reader = GeoReader(geo_dir, check_interval_s=0)
    path = geo_dir / "GeoLite2-City.mmdb"
    with path.open("r+b") as fh:  # rewritten in place, as `cp` does, and shorter
        fh.truncate(100)
    for i in range(1, 50):
        assert reader.lookup(f"81.2.69.{i}").city == "London"


def test_geo_lookup_command(geo_dir: Path, tmp_path: Path) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path / "d"), "REFGUARD_GEOIP_DIR": str(geo_dir)}
    out = subprocess.run([sys.executable, "-m", "tracker", "geo", "lookup", "203.0.113.9",
                          "--json"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["country"], answer["asn"], answer["hosting"]) == ("US", 14618, True)
    out = subprocess.run([sys.executable, "-m", "tracker", "geo", "lookup", "81.2.69.1"],
                         env=env, capture_output=True, text=True, check=False)
    assert "country: GB" in out.stdout and "city: London" in out.stdout
    out = subprocess.run([sys.executable, "-m", "tracker", "geo", "lookup", "nope"],
                         env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    (geo_dir / "broken.mmdb").write_bytes(b"x" * 100)
    out = subprocess.run([sys.executable, "-m", "tracker", "geo", "lookup", "81.2.69.1"],
                         env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 1 and "broken.mmdb" in out.stderr


async def geo_client(
    aiohttp_client: ClientFactory, tmp_path: Path, dsn: str, geo_dir: Path,
    tokens: dict[str, str],
) -> Client:
    """An app with the test databases, behind a trusted proxy (so X-Forwarded-For picks the
    client address), and a link to visit."""
    settings = make_settings(tmp_path / "d", dsn, geoip_dir=geo_dir,
                             trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    client = await aiohttp_client(create_app(settings))
    await make_link(client, tokens)
    return client


async def test_clicks_carry_geo_and_device(
    dsn: str, tmp_path: Path, geo_dir: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client = await geo_client(aiohttp_client, tmp_path, dsn, geo_dir, tokens)
    iphone = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_3_2 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/18.3.1 Mobile/15E148 Safari/604.1")
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"X-Forwarded-For": "81.2.69.160", "User-Agent": iphone,
                              "Accept-Language": "en-GB"})
    # From a hosting range, without the headers of a browser navigation: a bot.
    await client.get("/r/alice1", allow_redirects=False,
                     headers={"X-Forwarded-For": "203.0.113.50", "User-Agent": iphone + " x",
                              "Accept": "*/*"})
    await wait_for_clicks(conn, 2)
    rows = await conn.fetch(
        "SELECT country, region, city, asn, as_org, is_anonymous, is_hosting, ua_browser, ua_os, "
        "ua_device, is_mobile, is_bot, bot_rule FROM clicks ORDER BY ts")
    london, cloud = (dict(r) for r in rows)
    assert london == {"country": "GB", "region": "ENG", "city": "London", "asn": 20712,
                      "as_org": "Andrews & Arnold Ltd", "is_anonymous": False,
                      "is_hosting": False, "ua_browser": "Mobile Safari", "ua_os": "iOS",
                      "ua_device": "iPhone", "is_mobile": True, "is_bot": False,
                      "bot_rule": None}
    assert cloud["is_hosting"] and cloud["is_bot"]
    assert cloud["bot_rule"] == "hosting_without_browser_headers"


def test_an_imported_click_from_a_hosting_range_is_judged_on_what_it_carries(
    geo_dir: Path,
) -> None:
    """The import format has no Accept header: its absence there is no evidence of a bot (a
    VPN user's imported visit kept its reward), but a missing Accept-Language still is."""
    enricher = Enricher(b"k" * 32, (), geo=GeoReader(geo_dir))
    safari = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
              "like Gecko) Version/17.4 Safari/605.1.15")
    verdicts = {}
    for label, language in (("with language", "en-US,en;q=0.9"), ("without", "")):
        raw = RawClick(
            ts_us=1_760_000_000_000_000, click_id="0199c2a0-0000-7000-8000-000000000001",
            program_id=1, link_id=1, referrer_id=1, code="alice1", visitor_id="v1",
            new_visitor=False, peer="203.0.113.50", x_forwarded_for="", forwarded="",
            user_agent=safari, accept_language=language, referer="", sec_ch_ua="",
            sec_ch_ua_mobile="", sec_ch_ua_platform="", purpose="", accept="", query="",
            mode="")
        for source in ("import", "live"):
            row = dict(zip(COLUMNS, enricher.row(raw, source=source), strict=True))
            assert row["is_hosting"]
            verdicts[label, source] = row["bot_rule"]
    assert verdicts == {
        ("with language", "import"): None,
        ("with language", "live"): "hosting_without_browser_headers",  # no Accept sent
        ("without", "import"): "hosting_without_browser_headers",
        ("without", "live"): "hosting_without_browser_headers",
    }


async def test_hot_swap_under_load_never_fails_a_redirect(
    dsn: str, tmp_path: Path, geo_dir: Path, tokens: dict[str, str], conn: asyncpg.Connection,
    aiohttp_client: ClientFactory,
) -> None:
    client = await geo_client(aiohttp_client, tmp_path, dsn, geo_dir, tokens)
    statuses: list[int] = []
    stop = asyncio.Event()

    async def visitor(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            resp = await client.get("/r/alice1", allow_redirects=False,
                                    headers={"X-Forwarded-For": "81.2.69.160",
                                             "User-Agent": f"Mozilla/5.0 v{n}-{i}"})
            statuses.append(resp.status)

    users = [asyncio.create_task(visitor(n)) for n in range(4)]
    for generation in range(5):
        await asyncio.sleep(0.2)
        tmp = geo_dir / "swap.tmp"
        write_db(tmp, "GeoLite2-ASN", {"81.2.69.0/24": asn(64500 + generation, f"gen{generation}")})
        os.replace(tmp, geo_dir / "GeoLite2-ASN.mmdb")
    deadline = time.monotonic() + 30  # the reader looks for a new file every few seconds
    while time.monotonic() < deadline and await conn.fetchval(
            "SELECT asn FROM clicks ORDER BY ts DESC LIMIT 1") != 64504:
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*users)
    assert len(statuses) > 100
    assert set(statuses) == {302}
    await wait_for_clicks(conn, len(statuses))
    assert await conn.fetchval("SELECT count(*) FROM clicks") == len(statuses)
    assert await conn.fetchval(
        "SELECT count(*) FROM clicks WHERE asn IS NULL OR country <> 'GB'") == 0
    latest = await conn.fetchval("SELECT asn FROM clicks ORDER BY ts DESC LIMIT 1")
    assert latest == 64504
