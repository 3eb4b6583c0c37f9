"""Bot, link-preview and automation detection from maintained data.

Rules, in the order they are tried (the first that fires is recorded):

- `empty_user_agent`
- `crawler_list:<pattern>`: the `crawler-user-agents` package (monperrus/crawler-user-agents:
  search engines, SEO tools, HTTP libraries, headless browsers and the link-preview fetchers of
  Slack, X, Facebook, WhatsApp, Telegram, Discord, LinkedIn)
- `ua_parser_spider`: uap-core (the `ua-parser` package) classifies the device as a spider
- `prefetch`: a `Sec-Purpose` / `Purpose` prefetch or prerender request
- `hosting_without_browser_headers`: from a hosting/datacenter IP without the headers every
  browser sends on a navigation (Accept-Language and a specific Accept)
- `automation_webdriver`, `no_javascript`: from the optional browser-fingerprint page

The user agent is matched on its first MAX_UA characters, what is stored of it: the crawler
list is about 1,500 patterns, and over an untruncated UA of a few kilobytes they cost tens of
milliseconds a click (a cheap way to slow the flusher down); a verdict should also follow from
the stored UA alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import crawleruseragents

from fraud.useragents import parse_user_agent


@dataclass(frozen=True, slots=True)
class BotVerdict:
    is_bot: bool
    rule: str | None


HUMAN = BotVerdict(False, None)
# Characters of a user agent that are matched: tracker.formats.MAX_UA, what a click keeps
# (a library does not import tracker; tests/security/test_input_and_output.py checks they
# agree).
MAX_UA = 1024


def crawler_patterns() -> list[str]:
    return [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]


def crawler_examples() -> list[str]:
    """Every example user agent shipped with the crawler list."""
    return [ua for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
            for ua in entry.get("instances", [])]


class BotDetector:
    """Classifies a request; the user-agent part is cached per UA string."""

    def __init__(self, patterns: list[str] | None = None, cache_size: int = 65536) -> None:
        self.patterns = crawler_patterns() if patterns is None else patterns
        self._compiled = [re.compile(p) for p in self.patterns]
        # One alternation answers "is it any crawler" in a single pass; the per-pattern list is
        # consulted only on a hit, to name the rule.
        self._any = re.compile("|".join(f"(?:{p})" for p in self.patterns))
        self._by_ua = lru_cache(maxsize=cache_size)(self._classify_ua)

    def _classify_ua(self, user_agent: str) -> BotVerdict:
        if not user_agent.strip():
            return BotVerdict(True, "empty_user_agent")
        if self._any.search(user_agent) is not None:
            for pattern, rx in zip(self.patterns, self._compiled, strict=True):
                if rx.search(user_agent):
                    return BotVerdict(True, f"crawler_list:{pattern}")
        if parse_user_agent(user_agent).spider:
            return BotVerdict(True, "ua_parser_spider")
        return HUMAN

    def classify(
        self,
        user_agent: str,
        *,
        purpose: str = "",
        hosting: bool = False,
        accept_language: str = "",
        accept: str | None = "",
    ) -> BotVerdict:
        """Verdict for one request.

        `purpose` is the Sec-Purpose / Purpose header; `hosting` whether the client IP belongs
        to a hosting provider or datacenter; `accept` is None where the Accept header is not
        known (an imported click: the import format does not carry it), which is no evidence.
        """
        verdict = self._by_ua(user_agent[:MAX_UA])
        if verdict.is_bot:
            return verdict
        if purpose and ("prefetch" in purpose.lower() or "prerender" in purpose.lower()):
            return BotVerdict(True, "prefetch")
        if hosting and (not accept_language or (accept is not None and accept in ("", "*/*"))):
            return BotVerdict(True, "hosting_without_browser_headers")
        return HUMAN
