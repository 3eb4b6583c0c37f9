"""Reinstall stacking (fraud.stacking): one referrer's new accounts on one or two phone builds."""

from __future__ import annotations

from collections import Counter

from fraud.assess import assess_all, ring_flag_reasons
from fraud.signals import ConversionFacts, ProgramContext
from fraud.stacking import KIND, _clustering, _tail, device_build, device_stacks

MOTO = ("Mozilla/5.0 (Linux; Android 13; moto g84 5G Build/TP1A.220624.014; wv) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0 Mobile Safari/537.36")
TECNO = "Dalvik/2.1.0 (Linux; U; Android 11; TECNO KI5k Build/RP1A.200720.012)"
IPHONE = "Fitlo/5.12.1 (iPhone15,2; iOS 17.2; Scale/3.00)"
REDUCED = ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/120.0.0.0 Mobile Safari/537.36")


def _program(stacked: list[tuple[str, str]], *, renew: bool = False) -> list[ConversionFacts]:
    """160 customers of 40 referrers, each on a phone build of their own, and referrer "s" whose
    `stacked` (User-Agent, address) accounts each bought once."""
    convs: list[ConversionFacts] = []
    for i in range(160):
        agent = f"Dalvik/2.1.0 (Linux; U; Android 12; M{i} Build/SP1A.{i})"
        convs.append(ConversionFacts(i, f"c{i}", 1000.0 * i, (f"r{i % 40}",), amount=1000,
                                     agents=frozenset({(agent, f"10.0.{i}.1")})))
    for j, (agent, ip) in enumerate(stacked):
        convs.append(ConversionFacts(1000 + j, f"s{j}", 9e5 + 86_400.0 * 3 * j, ("s",),
                                     amount=1000, agents=frozenset({(agent, ip)})))
        if renew:
            convs.append(ConversionFacts(2000 + j, f"s{j}", 4e6 + j, (), amount=1000))
    return convs


def test_builds_are_read_from_android_and_ios_app_agents() -> None:
    assert device_build(MOTO) == "Android 13; moto g84 5G Build/TP1A.220624.014"
    assert device_build(TECNO) == "Android 11; TECNO KI5k Build/RP1A.200720.012"
    assert device_build(IPHONE) == "iPhone15,2; iOS 17.2"
    assert device_build(REDUCED) is None and device_build(None) is None


def test_two_phones_reinstalled_on_mobile_data_are_one_flagged_ring() -> None:
    stacked = [(TECNO, f"100.64.{j}.9") for j in range(6)] + [
        (MOTO, f"100.65.{j}.9") for j in range(3)]
    convs = _program(stacked)
    found = device_stacks(convs)
    assert set(found.reasons) == set(range(1000, 1009))
    [ring] = found.rings
    assert ring.kind == KIND
    assert {p for _k, p in ring.accounts} == {"s"} | {f"s{j}" for j in range(9)}
    assert ring_flag_reasons(ring)[0]["code"] == KIND
    scored = {s.assessment.conversion_id: s.assessment.score
              for s in assess_all(convs, {}, ProgramContext())}
    assert scored[1000] >= 0.5 and scored[3] < 0.5  # flagged; an ordinary referee is not


def test_a_household_at_home_and_customers_who_renew_are_not_a_stack() -> None:
    # the same phone model in one home (one address): one household, not five accounts
    assert device_stacks(_program([(TECNO, "192.0.2.7")] * 5)).reasons == {}
    # five accounts on the phone that each pay again: customers, whatever phone they share
    stacked = [(TECNO, f"100.64.{j}.9") for j in range(5)]
    assert device_stacks(_program(stacked, renew=True)).reasons == {}
    # four on a phone are what chance and families on matching phones give: under the floor
    assert device_stacks(_program(stacked[:4])).reasons == {}



def test_a_program_whose_friends_share_phones_sets_the_bar_higher() -> None:
    # Every referrer's friends on one phone build among them (friends and families buy alike
    # phones): the program's own clustering is measured, and the same count of accounts on one
    # build is less surprising there than where friends' phones are independent.
    def program(clustered: bool) -> list[ConversionFacts]:
        out = []
        for i in range(160):
            m = i % 40 if clustered else i
            out.append(ConversionFacts(i, f"c{i}", 1000.0 * i, (f"r{i % 40}",), amount=1000,
                                       agents=frozenset({(f"Dalvik/2.1.0 (Linux; U; Android 12;"
                                                          f" M{m} Build/SP1A.{m})",
                                                          f"10.0.{i}.1")})))
        return out

    def rho(convs: list[ConversionFacts]) -> float:
        builds = {c.customer: {device_build(a) or ""} for c in convs for a, _ip in c.agents}
        homes = {f"r{r}": [[f"c{i}"] for i in range(r, 160, 40)] for r in range(40)}
        on_build = Counter(b for bs in builds.values() for b in bs)
        return _clustering(homes, builds, on_build, len(builds))

    clustered, independent = rho(program(True)), rho(program(False))
    assert clustered > 0.2 and independent == 0.0
    assert _tail(4, 6, 0.02, clustered) > 100 * _tail(4, 6, 0.02, independent)
