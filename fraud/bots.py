"""Bot and link-preview detection from maintained data.

Patterns come from the `crawler-user-agents` package (monperrus/crawler-user-agents: search
engines, SEO tools, HTTP libraries, headless browsers and the link-preview fetchers of Slack, X,
Facebook, WhatsApp, Telegram, Discord and LinkedIn). Every verdict names the rule that fired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import crawleruseragents


@dataclass(frozen=True, slots=True)
class BotVerdict:
    is_bot: bool
    rule: str | None


HUMAN = BotVerdict(False, None)


class BotDetector:
    """Classifies a request by its user agent and prefetch headers; results cached per UA."""

    def __init__(self, patterns: list[str] | None = None, cache_size: int = 65536) -> None:
        if patterns is None:
            patterns = [entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA]
        self.patterns = patterns
        self._compiled = [re.compile(p) for p in patterns]
        # One alternation answers "is it any crawler" in a single pass; the per-pattern list is
        # consulted only on a hit, to name the rule.
        self._any = re.compile("|".join(f"(?:{p})" for p in patterns))
        self._by_ua = lru_cache(maxsize=cache_size)(self._classify_ua)

    def _classify_ua(self, user_agent: str) -> BotVerdict:
        if not user_agent.strip():
            return BotVerdict(True, "empty_user_agent")
        if self._any.search(user_agent) is None:
            return HUMAN
        for pattern, rx in zip(self.patterns, self._compiled, strict=True):
            if rx.search(user_agent):
                return BotVerdict(True, f"crawler_list:{pattern}")
        return BotVerdict(True, "crawler_list")

    def classify(self, user_agent: str, *, purpose: str = "") -> BotVerdict:
        """Verdict for one request. `purpose` is the Sec-Purpose / Purpose header."""
        verdict = self._by_ua(user_agent)
        if verdict.is_bot:
            return verdict
        if purpose and "prefetch" in purpose.lower():
            return BotVerdict(True, "prefetch")
        return HUMAN
