"""Bot detection against the crawler list's own examples and a large sample of real browsers."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from fraud.bots import MAX_UA, BotDetector, crawler_examples, required_text
from fraud.useragents import parse_user_agent


@pytest.fixture(scope="module")
def detector() -> BotDetector:
    return BotDetector()


def browser_user_agents() -> list[str]:
    """Real browser user agents with their market share (fake-useragent's data set)."""
    data = resources.files("fake_useragent") / "data" / "browsers.jsonl"
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    return sorted({row["useragent"] for row in rows})


def test_every_example_of_the_crawler_list_is_flagged(detector: BotDetector) -> None:
    examples = crawler_examples()
    assert len(examples) > 1000
    missed = [ua for ua in examples if not detector.classify(ua).is_bot]
    print(f"\ncrawler list examples flagged: {len(examples) - len(missed)}/{len(examples)}")
    assert missed == []


def test_the_crawler_rule_is_the_first_of_the_list_that_matches(detector: BotDetector) -> None:
    """Patterns are tried only on user agents holding their required text: the same verdicts,
    and the same rule named, as trying the whole list in its order (on every real browser and
    a twentieth of the list's examples, which all match: the reference tries 1,500 patterns on
    each)."""
    whole = re.compile("|".join(f"(?:{p})" for p in detector.patterns))
    compiled = [re.compile(p) for p in detector.patterns]

    def first_match(ua: str) -> str | None:
        if whole.search(ua) is None:
            return None
        return next(f"crawler_list:{p}" for p, rx in zip(detector.patterns, compiled, strict=True)
                    if rx.search(ua))

    uas = [ua[:MAX_UA] for ua in crawler_examples()[::20] + browser_user_agents()]
    for ua in uas:
        rule = detector.classify(ua).rule
        expected = first_match(ua)
        assert (rule if rule and rule.startswith("crawler_list:") else None) == expected, ua


def test_candidates_are_the_patterns_whose_text_is_in_the_user_agent(
    detector: BotDetector,
) -> None:
    """The patterns a user agent is tried on, found through their texts' first characters, are
    those whose required text it holds (or that have none), in the list's order: on every
    example of the list, every real browser, and texts at either end, short or not ASCII."""
    texts = [(i, required_text(p)) for i, p in enumerate(detector.patterns)]

    def reference(ua: str) -> list[int]:
        return [i for i, text in texts if text is None or text in ua]

    uas = crawler_examples() + browser_user_agents() + [
        "", "a", "ab", "get", "Y!J", "xget", "Googlebot/", "Googlebot/2.1 Googlebot/2.1",
        "x" * 3000 + "bingbot", "Zé Googlebot/ 🤖 ds9", "BW/1.0 (BW/)", "\udcff\x00bot",
    ]
    assert len(uas) > 2000
    for ua in uas:
        assert detector.candidates(ua) == reference(ua), ua


@pytest.mark.parametrize(("pattern", "text"), [
    ("Googlebot\\/", "Googlebot/"),
    ("AdsBot-Google([^-]|$)", "AdsBot-Google"),
    ("Mediapartners \\(Googlebot\\)", "Mediapartners (Googlebot)"),
    ("^Java\\/", "Java/"),
    ("bot?s", "bo"),  # (the t is optional)
    ("Chirp|gotosocial", None),
    ("(?i)crawler", None),
    ("[a-z]+bot", "bot"),
])
def test_required_text_is_in_every_match(pattern: str, text: str | None) -> None:
    assert required_text(pattern) == text


def test_false_positive_rate_on_real_browsers_is_at_most_one_percent(
    detector: BotDetector,
) -> None:
    browsers = browser_user_agents()
    assert len(browsers) > 500
    flagged = [(ua, detector.classify(ua).rule) for ua in browsers]
    false_positives = [(ua, rule) for ua, rule in flagged if rule is not None]
    rate = len(false_positives) / len(browsers)
    print(f"\nbrowser user agents: {len(browsers)}, flagged as bots: {len(false_positives)} "
          f"({rate:.2%})")
    for ua, rule in false_positives[:10]:
        print(f"  {rule}: {ua}")
    assert rate <= 0.01


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        ({"purpose": "prefetch"}, "prefetch"),
        ({"purpose": "prefetch;prerender"}, "prefetch"),
        ({"hosting": True, "accept_language": "", "accept": "text/html"},
         "hosting_without_browser_headers"),
        ({"hosting": True, "accept_language": "en", "accept": "*/*"},
         "hosting_without_browser_headers"),
        ({"hosting": True, "accept_language": "en", "accept": "text/html,*/*"}, None),
        ({}, None),
    ],
)
def test_header_rules(detector: BotDetector, headers: dict[str, object], rule: str | None) -> None:
    ua = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.4 Safari/605.1.15")
    assert detector.classify(ua, **headers).rule == rule  # type: ignore[arg-type]


def test_ua_parser_spider_class_is_a_rule_of_its_own() -> None:
    detector = BotDetector(patterns=["^NeverMatches$"])
    verdict = detector.classify("Mozilla/5.0 (compatible; Googlebot/2.1; "
                                "+http://www.google.com/bot.html)")
    assert verdict.rule == "ua_parser_spider"


def test_user_agent_parsing() -> None:
    android = parse_user_agent(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36")
    assert (android.browser, android.os, android.device, android.mobile) == (
        "Chrome Mobile", "Android", "Pixel 8", True)
    desktop = parse_user_agent(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0")
    assert (desktop.browser, desktop.os, desktop.mobile, desktop.spider) == (
        "Firefox", "Windows", False, False)
    assert parse_user_agent("").browser is None
