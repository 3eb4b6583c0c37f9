"""Click spoofing on residential addresses (issue 13): clicks fired with harvested device ids,
from current browsers and the market's language, so that the phones' owners' own purchases are
credited to the link. The clicks were not made on the device that converted: the referrer has
far more such customers than the program's, who now and then click on one device and buy on
another."""

from __future__ import annotations

import random

import pytest

from fraud.assess import DECISIVE, assess_all
from fraud.signals import (
    DAY,
    OTHER_DEVICE_MIN,
    ClickFacts,
    ConversionFacts,
    ProgramContext,
    on_another_device,
    referrer_findings,
)

ANDROID = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Mobile Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Safari/537.36")
APP_ANDROID = "Dalvik/2.1.0 (Linux; U; Android 14; SM-A155M Build/UP1A.231005.007)"
APP_IOS = "Fitlo/5.12.0 (iPhone14,2; iOS 17.1; Scale/3.00)"


def _conversion(i: int, ref: str, at: float, clicks: list[tuple[str, str]], app: str
                ) -> ConversionFacts:
    """A purchase by customer c<i> credited to `ref` through `clicks` ((cookie, agent)) in the
    days before, reported by the app with the User-Agent `app`."""
    touches = tuple(ClickFacts(f"k{i}-{j}", at - (len(clicks) - j) * 3600 * 7, ref, cookie,
                               f"10.{i % 250}.{j}.1", None, agent=agent)
                    for j, (cookie, agent) in enumerate(clicks))
    agents = frozenset({(t.agent or "", t.ip) for t in touches} | {(app, f"10.9.{i % 250}.9")})
    return ConversionFacts(i, f"c{i}", at, (ref,), touches=touches, amount=2990,
                           visitors=frozenset(c for c, _ in clicks), agents=agents)


def _program(seed: int) -> tuple[list[ConversionFacts], set[int]]:
    rng = random.Random(seed)
    convs: list[ConversionFacts] = []
    i = 0
    for r in range(40):  # honest referrers: the friend clicks and buys on one phone
        for _ in range(rng.randint(2, 5)):
            i += 1
            ios = rng.random() < 0.4
            clicks = [(f"v{i}", IPHONE if ios else ANDROID)]
            # now and then someone clicks on a laptop and buys on the phone
            if rng.random() < 0.03:
                clicks = [(f"v{i}", WINDOWS)]
            convs.append(_conversion(i, f"r{r}", rng.uniform(5, 55) * DAY, clicks,
                                     APP_IOS if ios else APP_ANDROID))
    spoofed: set[int] = set()
    for _ in range(rng.randint(14, 20)):  # the spoofer's clicks carry the phone's device id
        i += 1
        ios = rng.random() < 0.35
        clicks = [(f"adid{i}", IPHONE if rng.random() < 0.35 else ANDROID)
                  for _ in range(rng.randint(1, 3))]
        conv = _conversion(i, "spoofer", rng.uniform(5, 55) * DAY, clicks,
                           APP_IOS if ios else APP_ANDROID)
        convs.append(conv)
        if on_another_device(conv):
            spoofed.add(i)
    return convs, spoofed


def test_one_cookie_on_two_platforms_or_another_converting_device() -> None:
    same = _conversion(1, "r", 10 * DAY, [("v", ANDROID)], APP_ANDROID)
    assert not on_another_device(same)
    assert on_another_device(_conversion(2, "r", 10 * DAY, [("v", IPHONE)], APP_ANDROID))
    assert on_another_device(_conversion(3, "r", 10 * DAY, [("v", IPHONE), ("v", ANDROID)],
                                         APP_IOS))
    # a User-Agent that names no platform says nothing
    assert not on_another_device(_conversion(4, "r", 10 * DAY, [("v", "okhttp/4.9")], APP_IOS))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_referrer_whose_clicks_were_made_elsewhere_is_found(seed: int) -> None:
    convs, spoofed = _program(seed)
    assert len(spoofed) >= OTHER_DEVICE_MIN
    found = referrer_findings(convs, ProgramContext())
    flagged = {ref for ref, fs in found.items()
               if any(f.reason.code == "clicks_on_another_device" for f in fs)}
    assert flagged == {"spoofer"}
    scored = {s.assessment.conversion_id: s.assessment.score
              for s in assess_all(convs, {}, ProgramContext())}
    assert all(scored[i] >= DECISIVE for i in spoofed)
    honest = [c.conversion_id for c in convs if c.referrers != ("spoofer",)]
    assert all(scored[i] < DECISIVE for i in honest)


def test_a_small_referrer_whose_friends_bought_on_another_device_is_not_found() -> None:
    """Friends of one desktop-heavy referrer click on laptops and buy on their phones: three of
    five is far above the program's share, but a handful of friends alike is no spoofing."""
    convs, _spoofed = _program(1)
    convs = [c for c in convs if c.referrers != ("spoofer",)]
    i = max(c.conversion_id for c in convs)
    for k in range(5):
        i += 1
        clicks = [(f"d{i}", WINDOWS if k < 3 else ANDROID)]
        convs.append(_conversion(i, "desk", (10 + k) * DAY, clicks, APP_ANDROID))
    found = referrer_findings(convs, ProgramContext())
    assert not any(f.reason.code == "clicks_on_another_device" for f in found.get("desk", []))
