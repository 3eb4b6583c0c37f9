"""fraud/: per-conversion signals and rings, on plain data."""

from __future__ import annotations

import random

import pytest

from fraud.assess import assess
from fraud.rings import (
    Account,
    columns_by_account,
    dense_blocks,
    find_rings,
    referral_cycles,
    shared_infrastructure,
)
from fraud.signals import ClickFacts, ConversionFacts, ReferrerFacts


def click(at: float, **kw: object) -> ClickFacts:
    base: dict[str, object] = {"click_id": "c", "at": at, "referrer": "alice", "visitor": "v1",
                               "ip": "81.2.69.1", "device": "d1"}
    base.update(kw)
    return ClickFacts(**base)  # type: ignore[arg-type]


def test_clean_conversion_has_no_reasons() -> None:
    conv = ConversionFacts(1, "bob", 10_000.0, ("alice",), touches=(click(1000.0),),
                           ips=frozenset({"81.2.69.1"}))
    result = assess(conv, {"alice": ReferrerFacts("alice", ips=frozenset({"5.6.7.8"}))})
    assert result.reasons == () and result.score == 0.0


def test_self_referral_and_injection_and_bots_with_values_and_thresholds() -> None:
    alice = ReferrerFacts("alice", email_hash=b"h", devices=frozenset({"d1"}))
    conv = ConversionFacts(
        2, "alice-alt", 1003.0, ("alice",), email_hash=b"h", devices=frozenset({"d1"}),
        country="FR",
        touches=(click(1000.0, is_bot=True, bot_rule="crawler_list:curl", hosting=True,
                       country="US", query="gclid=abc&x=1"),))
    result = assess(conv, {"alice": alice})
    codes = {r.code: r for r in result.reasons}
    assert set(codes) == {"self_referral", "fast_conversion", "bot_click", "anonymous_ip",
                          "paid_click_id", "country_mismatch"}
    assert codes["self_referral"].value == ["email"] and codes["self_referral"].strong
    assert codes["fast_conversion"].value == 3.0 and codes["fast_conversion"].threshold == 10.0
    assert codes["bot_click"].value == "crawler_list:curl"
    assert codes["paid_click_id"].value == ["gclid"]
    assert 0.99 < result.score <= 1.0
    for reason in result.reasons:
        as_dict = reason.as_dict()
        assert as_dict["value"] is not None and as_dict["threshold"] is not None
        assert as_dict["message"]
    same_id = assess(ConversionFacts(3, "alice", 5000.0, ("alice",)), {})
    assert [r.code for r in same_id.reasons] == ["self_referral"]


def test_ring_on_two_ips_is_found_and_honest_users_are_not() -> None:
    rng = random.Random(4)
    rows = []
    # 12 honest customers and 4 honest referrers, each on their own IP and device; a popular
    # carrier NAT that 40 honest accounts share says nothing.
    for i in range(40):
        kind = "referrer" if i < 4 else "customer"
        rows.append(((kind, f"h{i}"), f"10.{i}.0.1", f"dev-h{i}"))
        rows.append(((kind, f"h{i}"), "100.64.0.1", None))
    # The ring: 2 referrers and 6 fake customers on 2 IPs and 3 devices.
    ring = [("referrer", "f0"), ("referrer", "f1")] + [("customer", f"x{i}") for i in range(6)]
    for account in ring:
        rows.append((account, rng.choice(["203.0.113.5", "203.0.113.6"]), None))
        rows.append((account, None, rng.choice(["dev-a", "dev-b", "dev-c"])))
    uses = columns_by_account(rows)
    found = shared_infrastructure(uses)
    assert len(found) == 1
    assert found[0].accounts == frozenset(ring)
    assert found[0].shared
    assert {c[1] for c in found[0].shared} <= {"203.0.113.5", "203.0.113.6", "dev-a", "dev-b",
                                                "dev-c"}
    members = {m["type"] for m in found[0].members}
    assert members >= {"referrer", "customer", "ip", "device"}


def test_people_behind_one_gateway_are_not_a_ring_but_accounts_living_on_it_are() -> None:
    """Bound by addresses alone: six fake accounts that only ever use two IPs are a ring; six
    people who passed through the same two carrier NAT addresses, each also at home, are not."""
    def group(prefix: str, *, homes: bool) -> list[tuple[Account, str | None, str | None]]:
        rows: list[tuple[Account, str | None, str | None]] = []
        for i in range(6):
            account = ("referrer" if i == 0 else "customer", f"{prefix}{i}")
            rows.append((account, f"{prefix}.gw.0", f"dev-{prefix}{i}"))
            rows.append((account, f"{prefix}.gw.1", None))
            if homes:
                rows.append((account, f"{prefix}.home.{i}", None))
                rows.append((account, f"{prefix}.home2.{i}", None))
        return rows

    # Two of the people behind the NAT carry the same phone: their header fingerprints collide.
    collision: list[tuple[Account, str | None, str | None]] = [
        (("customer", "nat1"), None, "same-phone"), (("customer", "nat2"), None, "same-phone")]
    found = shared_infrastructure(columns_by_account(
        group("fake", homes=False) + group("nat", homes=True) + collision))
    assert [sorted(a for _kind, a in ring.accounts) for ring in found] == [
        [f"fake{i}" for i in range(6)]]
    assert found[0].evidence["address_concentration"] == 1.0


def test_a_bridge_does_not_merge_two_rings() -> None:
    """Two rings of twelve accounts, each tight on its own IPs and devices, and one account
    that used an IP of each: one component, split into its two communities."""
    rows: list[tuple[Account, str | None, str | None]] = []
    rings = []
    for r in range(2):
        members = [("referrer", f"r{r}")] + [("customer", f"c{r}-{i}") for i in range(11)]
        rings.append(frozenset(members))
        for i, account in enumerate(members):
            rows.append((account, f"198.51.{r}.{i % 3}", f"dev-{r}-{i % 2}"))
    rows.append((("customer", "bridge"), "198.51.0.0", None))
    rows.append((("customer", "bridge"), "198.51.1.0", None))
    uses = columns_by_account(rows)
    merged = shared_infrastructure(uses, split_above=100)
    assert len(merged) == 1 and len(merged[0].accounts) == 25
    found = shared_infrastructure(uses)  # 25 accounts > 20: split
    assert len(found) == 2
    for ring in rings:
        match = [f for f in found if f.accounts & ring]
        assert len(match) == 1 and ring <= match[0].accounts
        assert len(match[0].accounts - ring) <= 1  # at most the bridge


def test_dense_block_resists_camouflage() -> None:
    rng = random.Random(5)
    uses: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for i in range(300):  # honest accounts on popular columns and a private one
        uses[("customer", f"h{i}")] = {("ip", f"pop{rng.randrange(10)}"), ("device", f"d{i}")}
    fraud = [("customer", f"f{i}") for i in range(15)]
    for account in fraud:
        # Every fake account uses the same 6 farm devices, and camouflages with popular IPs.
        uses[account] = {("device", f"farm{j}") for j in range(6)} | {
            ("ip", f"pop{rng.randrange(10)}")}
    blocks = dense_blocks(uses, blocks=1)
    assert len(blocks) == 1
    assert blocks[0].accounts == frozenset(fraud)


def test_referral_cycles() -> None:
    rings = referral_cycles([("a", "b"), ("b", "c"), ("c", "a"), ("d", "e"), ("x", "x")])
    assert len(rings) == 1
    assert rings[0].accounts == {("referrer", "a"), ("referrer", "b"), ("referrer", "c")}
    assert rings[0].evidence["length"] == 3
    assert find_rings({}, [("a", "b"), ("b", "a")])[0].kind == "referral_cycle"


def test_no_cycle_search_where_no_referrer_was_referred(monkeypatch: pytest.MonkeyPatch) -> None:
    """Referrers nobody referred, customers who refer nobody: no cycle, and no graph built for
    the search (seconds on a million clicks); a cycle behind a long chain is still found."""
    import networkx as nx

    built: list[int] = []
    real = nx.DiGraph
    monkeypatch.setattr(nx, "DiGraph", lambda *a, **k: built.append(1) or real(*a, **k))
    assert referral_cycles([(f"r{i % 50}", f"c{i}") for i in range(2_000)]) == []
    assert built == []
    chain = [(f"p{i}", f"p{i + 1}") for i in range(20)] + [("q", "r"), ("r", "s"), ("s", "q")]
    rings = referral_cycles(chain)
    assert [r.accounts for r in rings] == [{("referrer", "q"), ("referrer", "r"),
                                             ("referrer", "s")}]


def test_delay_distribution_and_refund_rate_and_shared_device() -> None:
    from fraud.signals import ProgramContext, referrer_reasons, shared_device_reasons

    rng = random.Random(6)
    conversions = []
    for i in range(200):
        ref = "quick" if i < 20 else f"r{i % 10}"
        delay = rng.uniform(1, 30) if ref == "quick" else rng.uniform(600, 86400)
        conversions.append(ConversionFacts(
            i, f"c{i}", 100_000.0, (ref,), touches=(click(100_000.0 - delay, referrer=ref),),
            devices=frozenset({"shared" if i in (1, 2, 3, 4, 5) else f"d{i}"})))
    reasons = referrer_reasons(
        conversions, ProgramContext(reversed_ids=frozenset(range(20, 200, 10))))
    # Faster than the program's (KS) and among its fastest far more than chance (binomial).
    assert [r.code for r in reasons["quick"]] == ["delay_distribution", "injection_timing"]
    assert reasons["quick"][0].value > 0.9
    # r0 had every one of its conversions refunded (ids 20, 30, ... are all r0's).
    assert [r.code for r in reasons["r0"]] == ["refund_rate"]
    assert not any(r in reasons for r in ("r1", "r2"))
    crowded = shared_device_reasons(conversions)
    assert set(crowded) == {1, 2, 3, 4, 5} and crowded[1].value == 5
    # Three customers of three different referrers on one fingerprint: one phone model behind
    # one campus network, not one person making accounts for their own link.
    campus = [ConversionFacts(300 + i, f"s{i}", 100_000.0, (f"student{i}",),
                              devices=frozenset({"iphone-campus"})) for i in range(3)]
    assert shared_device_reasons(campus) == {}


def test_velocity_and_click_spam() -> None:
    from fraud.signals import DAY, ProgramContext, referrer_reasons

    rng = random.Random(8)
    conversions: list[ConversionFacts] = []

    def convert(ref: str, at: float, delay: float) -> None:
        conversions.append(ConversionFacts(
            len(conversions), f"c{len(conversions)}", at, (ref,),
            touches=(click(at - delay, referrer=ref),)))

    # Thirty ordinary referrers, about one conversion every three days for 60 days, hours
    # after the click; one big steady referrer with eight a day, every day.
    for r in range(30):
        for _ in range(20):
            convert(f"r{r}", rng.uniform(0, 60 * DAY), rng.uniform(600, 2 * DAY))
    for day in range(60):
        for _ in range(8):
            convert("steady", (day + rng.random()) * DAY, rng.uniform(600, 2 * DAY))
    # A referrer with a conversion a week, then twenty in one afternoon.
    for week in range(8):
        convert("burst", week * 7 * DAY, rng.uniform(600, 2 * DAY))
    for _ in range(20):
        convert("burst", 50 * DAY + rng.uniform(0, 6 * 3600), rng.uniform(600, 2 * DAY))
    # Click spam: 400 clicks, 12 conversions, each days after its click.
    for _ in range(12):
        convert("spam", rng.uniform(10 * DAY, 60 * DAY), rng.uniform(4 * DAY, 9 * DAY))
    clicks = {f"r{r}": 40 for r in range(30)} | {"steady": 1000, "burst": 60, "spam": 400}
    reasons = referrer_reasons(conversions, ProgramContext(referrer_clicks=clicks))
    codes = {ref: [r.code for r in rs] for ref, rs in reasons.items()}
    assert codes == {"burst": ["velocity"], "spam": ["click_spam"]}
    velocity = reasons["burst"][0]
    assert velocity.value >= 20 and isinstance(velocity.threshold, float)
    assert velocity.value >= velocity.threshold
    spam = reasons["spam"][0]
    assert spam.value == 0.03 and "400 clicks" in spam.message
    # Without click counts, a low conversion rate cannot be told: no click-spam reason.
    assert "spam" not in referrer_reasons(conversions)


def test_shared_network_is_a_slash_24_or_a_slash_48() -> None:
    def reasons(referee_ip: str, referrer_ip: str) -> list[str]:
        conv = ConversionFacts(1, "c1", 0.0, ("ref",), ips=frozenset({referee_ip}))
        ref = ReferrerFacts("ref", ips=frozenset({referrer_ip}))
        return [r.code for r in assess(conv, {"ref": ref}).reasons]

    assert reasons("81.2.3.4", "81.2.3.99") == ["shared_network"]
    assert reasons("81.2.3.4", "81.2.4.4") == []
    assert reasons("2a02:1234:5::1", "2a02:1234:5:9::7") == ["shared_network"]
    # One big ISP's IPv6 space is not one household's network.
    assert reasons("2a02:1234::5", "2a02:9999:1::7") == []


def test_a_referrer_converting_through_hosting_ips_is_a_farm_not_one_vpn_user() -> None:
    from fraud.signals import HOSTING_SHARE, referrer_reasons

    conversions = []
    for i in range(40):  # a big honest referrer: two of forty customers use a VPN
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("big",), touches=(
            click(40_000.0, referrer="big", anonymous=i in (3, 17)),)))
    for i in range(40, 46):  # the farm: four of six through a hosting provider
        conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("farm",), touches=(
            click(40_000.0, referrer="farm", hosting=i < 44),)))
    conversions.append(ConversionFacts(99, "c99", 50_000.0, ("tiny",), touches=(
        click(40_000.0, referrer="tiny", hosting=True),)))  # one conversion: a VPN user
    reasons = referrer_reasons(conversions)
    assert set(reasons) == {"farm"}
    (farm,) = reasons["farm"]
    assert (farm.code, farm.value, farm.threshold) == ("hosting_share", 0.6667, HOSTING_SHARE)
    assert "4 of farm's 6 customers" in farm.message


def test_a_referrer_converting_through_headerless_visits_is_automation() -> None:
    from fraud.signals import HEADERLESS_SHARE, ProgramContext, referrer_reasons

    def program(*, header_in_data: bool) -> list[ConversionFacts]:
        conversions = []
        for i in range(40):  # honest visitors' browsers send Accept-Language (one privacy nut)
            conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("big",), touches=(
                click(40_000.0, referrer="big", headerless=not header_in_data or i == 7),)))
        for i in range(40, 48):  # a script with a browser's user agent: 6 of 8 without it
            conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("bot",), touches=(
                click(40_000.0, referrer="bot", headerless=not header_in_data or i < 46),)))
        for i in range(50, 52):  # too few to tell
            conversions.append(ConversionFacts(i, f"c{i}", 50_000.0, ("tiny",), touches=(
                click(40_000.0, referrer="tiny", headerless=True),)))
        return conversions

    reasons = referrer_reasons(program(header_in_data=True))
    assert set(reasons) == {"bot"}
    (bot,) = reasons["bot"]
    assert (bot.code, bot.value, bot.threshold) == ("headerless_share", 0.75, HEADERLESS_SHARE)
    assert "6 of bot's 8 conversions" in bot.message and "program: 7%" in bot.message
    # Data without the header at all (an import that never had it) says nothing.
    assert referrer_reasons(program(header_in_data=False)) == {}
    # An incremental scan sees a window: the program's share is the latest full scan's.
    only_bot = [c for c in program(header_in_data=True) if c.referrers == ("bot",)]
    assert referrer_reasons(only_bot) == {}  # nothing else in the window to compare with
    assert set(referrer_reasons(only_bot, ProgramContext(headerless_share=0.02))) == {"bot"}
    assert referrer_reasons(only_bot, ProgramContext(headerless_share=0.6)) == {}


def test_assess_all_puts_each_conversions_reasons_together_in_one_order() -> None:
    """Own signals, then rings, the referrer's signals, and the finance model; one risk."""
    from collections.abc import Sequence

    import numpy as np

    from fraud.assess import FINANCE_MODEL_AT, RING_REFERRER, assess_all, combine
    from fraud.rings import Ring
    from fraud.signals import ProgramContext
    from fraud.supervised import SupervisedRisk

    class Rejects(SupervisedRisk):
        def risk(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
            return np.full(len(rows), 0.9)

    # alice's five customers all asked for their money back; c1 is in a ring with alice; c2
    # converted three seconds after the click.
    conversions = [ConversionFacts(i, f"c{i}", 10_000.0, ("alice",)) for i in range(1, 6)]
    conversions[1] = ConversionFacts(2, "c2", 10_000.0, ("alice",),
                                     touches=(click(9_997.0),))
    # The rest of the program, none refunded: the baseline alice is compared with.
    conversions += [ConversionFacts(100 + i, f"o{i}", 10_000.0, ("olga",)) for i in range(30)]
    ring = Ring("ring", frozenset({("customer", "c1"), ("referrer", "alice"),
                                   ("customer", "x")}), frozenset({("ip", "1.2.3.4")}), 0.9)
    context = ProgramContext(reversed_ids=frozenset(range(1, 6)))
    model = Rejects(model_=object(), validation_auc_=0.8, trained_on_=300)
    scored = assess_all(conversions, {}, context, [ring], only={1, 2}, model=model)
    codes = {s.assessment.conversion_id: [r.code for r in s.assessment.reasons]
             for s in scored}
    assert codes == {1: ["ring_member", "refund_rate", "finance_model"],
                     2: ["fast_conversion", "ring_referrer", "refund_rate", "finance_model"]}
    for s in scored:
        assert s.assessment.score == combine(s.assessment.reasons)
        assert len(s.features) == 8
    second = scored[1].assessment.reasons
    assert second[1].weight == RING_REFERRER
    assert second[-1].threshold == FINANCE_MODEL_AT and "0.90" in second[-1].message
    # The finance model off (too few decisions of both kinds): no such reason.
    off = assess_all(conversions, {}, context, [ring], only={1}, model=SupervisedRisk())
    assert [r.code for r in off[0].assessment.reasons] == ["ring_member", "refund_rate"]
