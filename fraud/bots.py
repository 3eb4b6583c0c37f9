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
import re._parser as sre_parse  # type: ignore[import-not-found]
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


def required_text(pattern: str) -> str | None:
    """Text that every match of `pattern` contains: its longest run of plain characters at the
    top level (neither optional, repeated nor in an alternative), or None when it has none or
    ignores case."""
    parsed = sre_parse.parse(pattern)
    if parsed.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    best: list[str] = []
    run: list[str] = []
    for op, arg in [*parsed, (None, None)]:
        if op is sre_parse.LITERAL:
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = run
        run = []
    return "".join(best) or None


def crawler_examples() -> list[str]:
    """Every example user agent shipped with the crawler list."""
    return [ua for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
            for ua in entry.get("instances", [])]


class BotDetector:
    """Classifies a request; the user-agent part is cached per UA string."""

    def __init__(self, patterns: list[str] | None = None, cache_size: int = 65536) -> None:
        self.patterns = crawler_patterns() if patterns is None else patterns
        self._compiled = [re.compile(p) for p in self.patterns]
        # A pattern is tried only on a user agent holding the text each of its matches holds
        # (all but a few have some), and the patterns left are tried in the list's order, so
        # the first that matches names the rule as before. Those texts are found through their
        # first GRAM characters: the user agent's own GRAM-character pieces (a hundred or so)
        # name the few texts that may be in it: 19 us of CPU a user agent not seen before, where
        # testing each of the 1,500 texts took 99 (a search of their alternation, 1 ms).
        self._always: list[int] = []  # patterns without a text of GRAM characters or more
        self._by_gram: dict[str, list[tuple[int, str]]] = {}
        for i, text in enumerate(required_text(p) for p in self.patterns):
            if text is None or len(text) < self.GRAM:
                self._always.append(i)
            else:
                self._by_gram.setdefault(text[: self.GRAM], []).append((i, text))
        self._by_ua = lru_cache(maxsize=cache_size)(self._classify_ua)

    GRAM = 3

    def candidates(self, user_agent: str) -> list[int]:
        """The patterns (indexes, in the list's order) whose required text is in `user_agent`
        or that have none: the only ones that may match it."""
        found = list(self._always)
        gram = self.GRAM
        pieces = {user_agent[j : j + gram] for j in range(len(user_agent) - gram + 1)}
        for piece in self._by_gram.keys() & pieces:
            found += [i for i, text in self._by_gram[piece] if text in user_agent]
        found.sort()
        return found

    def _classify_ua(self, user_agent: str) -> BotVerdict:
        if not user_agent.strip():
            return BotVerdict(True, "empty_user_agent")
        for i in self.candidates(user_agent):
            if self._compiled[i].search(user_agent):
                return BotVerdict(True, f"crawler_list:{self.patterns[i]}")
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
