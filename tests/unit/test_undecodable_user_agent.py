"""A user agent with bytes that are not UTF-8 (the redirect journals them as lone surrogates,
by surrogateescape) is parsed as the click stores it, with U+FFFD for them: before, the parser
raised UnicodeEncodeError, so Enricher.row did, and the flusher retried that batch for ever
while the journal grew behind it."""

from __future__ import annotations

from fraud.bots import BotDetector
from fraud.useragents import parse_user_agent
from tracker.clicks.enrich import COLUMNS, Enricher
from tracker.clicks.journal import RawClick

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")


def test_an_undecodable_user_agent_is_parsed_as_it_is_stored() -> None:
    raw = IPHONE + " caf\udce9"  # b"caf\xe9" (Latin-1) read by surrogateescape
    stored = IPHONE + " caf\ufffd"
    assert parse_user_agent(raw) == parse_user_agent(stored)
    assert parse_user_agent(raw).browser == "Mobile Safari" and parse_user_agent(raw).mobile
    assert parse_user_agent("\ud800 Googlebot/2.1").spider  # (no byte gives it; still read)
    assert BotDetector().classify("curl/8.0 \udcff", purpose="", hosting=False,
                                  accept_language="", accept=None).is_bot
    click = RawClick(1_700_000_000_000_000, "01890000-0000-7000-8000-000000000001", 1, 2, 3,
                     "c", "v" * 24, True, "203.0.113.7", "", "", raw, "en", "", "", "", "", "",
                     "text/html", "", "")
    row = Enricher(b"k" * 32, ()).row(click)
    assert row[COLUMNS.index("user_agent")] == stored
    assert row[COLUMNS.index("ua_browser")] == "Mobile Safari"
    assert row[COLUMNS.index("is_mobile")] is True
