"""Collusion pools: one operator's browser or phone behind new customers of unrelated
referrers is one ring; a public terminal, a carrier NAT or a family's tablet is not."""

from __future__ import annotations

from dataclasses import replace

from fraud.assess import assess, assess_all, ring_flag_reasons
from fraud.pools import collusion_pools
from fraud.signals import ClickFacts, ConversionFacts, ProgramContext

DAY = 86400.0
T0 = 1_790_000_000.0


def conv(i: int, at: float, referrer: str | None, *, cookie: str | None = None,
         device: str | None = None, agent: tuple[str, str] | None = None) -> ConversionFacts:
    touches = () if referrer is None else (
        ClickFacts(f"k{i}", at - 300, referrer, cookie, None, device),)
    return ConversionFacts(
        i, f"c{i}", at, () if referrer is None else (referrer,), touches=touches,
        visitors=frozenset({cookie} if cookie else ()),
        devices=frozenset({device} if device else ()),
        agents=frozenset({agent} if agent else ()), amount=1000)


def ordinary(n: int = 40) -> list[ConversionFacts]:
    """Genuine referees: their own browsers and phones, their own home connections."""
    return [conv(1000 + i, T0 + i * DAY, f"r{i % 9}", cookie=f"v{i}", device=f"d{i}",
                 agent=(f"Phone/{i % 5}", f"10.0.{i}.1")) for i in range(n)]


def test_one_cookie_behind_new_accounts_of_unrelated_referrers_is_a_pool() -> None:
    pool = [conv(i, T0 + i * 3600, f"ref{i % 5}", cookie="operator") for i in range(8)]
    rings = collusion_pools(pool + ordinary())
    assert len(rings) == 1
    ring = rings[0]
    assert ring.kind == "collusion_pool"
    assert ring.accounts == {("customer", f"c{i}") for i in range(8)}
    message = str(ring_flag_reasons(ring)[0]["message"])
    assert "cookie operator" in message and "ref0" in message and "5 unrelated" in message
    # Its members are held (the network family alone: flagged, not rejected).
    risk = assess(pool[0], {}, rings)
    assert 0.5 <= risk.score <= 0.85
    assert any(r.code == "collusion_pool_member" for r in risk.reasons)
    # A genuine referee outside it is untouched.
    assert assess(ordinary()[0], {}, rings).score == 0.0
    # One browser cookie is one person: strong identity evidence, enough to reject.
    scored = {s.assessment.conversion_id: s.assessment
              for s in assess_all(pool + ordinary(), {}, ProgramContext(), rings)}
    assert scored[0].score > 0.85
    assert any(r.code == "pooled_cookie" and r.strong for r in scored[0].reasons)
    assert scored[1000].score == 0.0


def test_a_home_connection_behind_new_accounts_of_several_referrers_is_a_pool() -> None:
    """Two phones at one home, rotating cookies: the home binds them; a pool bound only
    by devices and addresses is held for review, not rejected."""
    pool = [conv(i, T0 + i * 3600, f"ref{i % 6}", agent=(f"Phone/{i % 2}", "203.0.113.9"))
            for i in range(6)]
    rings = collusion_pools(pool + ordinary())
    assert [r.accounts for r in rings] == [{("customer", f"c{i}") for i in range(6)}]
    scored = assess_all(pool + ordinary(), {}, ProgramContext(), rings)
    assert 0.5 <= scored[0].assessment.score <= 0.85


def test_a_phone_on_a_home_connection_binds_accounts_without_cookies() -> None:
    """Cleared cookies and rotating addresses: the same phone at home still ties them."""
    pool = [conv(i, T0 + i * 7200, f"ref{i % 4}",
                 agent=("Odd/1.0", "192.0.2.7" if i % 3 == 0 else f"198.51.{i}.1"))
            for i in range(12)]
    rings = collusion_pools(pool + ordinary())
    assert len(rings) == 1
    assert rings[0].accounts == {("customer", f"c{i}") for i in range(0, 12, 3)}


def test_a_public_terminal_is_not_a_pool() -> None:
    # Accounts spread over weeks.
    spread = [conv(i, T0 + i * 2 * DAY, f"ref{i % 5}", cookie="kiosk") for i in range(8)]
    # Or in a burst but with people buying without any referral link.
    organic = [conv(20 + i, T0 + i * 3600, None if i % 3 == 0 else f"ref{i % 5}",
                    cookie="library") for i in range(9)]
    assert collusion_pools(spread + organic + ordinary()) == []


def test_a_carrier_address_with_many_phones_binds_nobody() -> None:
    nat = [conv(i, T0 + i * 3600, f"ref{i % 5}", agent=(f"Phone/{i % 6}", "100.64.0.1"))
           for i in range(30)]
    assert collusion_pools(nat + ordinary()) == []
    # Nor one with a single popular phone model: more accounts than any operator makes.
    one_model = [conv(100 + i, T0 + i * 600, f"ref{i % 5}", device="popular",
                      agent=("Phone/1", "100.64.0.2")) for i in range(30)]
    assert collusion_pools(one_model + ordinary()) == []


def test_a_family_tablet_or_one_referrers_friends_is_not_a_pool() -> None:
    family = [conv(i, T0 + i * 3600, f"ref{i}", cookie="tablet",
                   agent=(f"Phone/{i}", "203.0.113.1")) for i in range(3)]
    one_referrer = [conv(10 + i, T0 + i * 3600, "solo", cookie="shared") for i in range(6)]
    assert collusion_pools(family + one_referrer + ordinary()) == []


def mailed(i: int, at: float, referrer: str, *, email: bytes | None = None,
           ip: str | None = None, agent: str = "Phone/common", language: str = "en-US"
           ) -> ConversionFacts:
    """A referee with a mailbox, brought by a click from `agent` (with `language`) on `ip`."""
    address = ip or f"198.18.{i // 250}.{i % 250}"
    touch = ClickFacts(f"k{i}", at - 600, referrer, f"cookie{i}", address, None,
                       language=language, agent=agent)
    return ConversionFacts(i, f"c{i}", at, (referrer,), email_hash=email, touches=(touch,),
                           visitors=frozenset({f"cookie{i}"}), agents=frozenset({(agent,
                                                                                  address)}),
                           amount=1000)


def crowd(n: int = 120) -> list[ConversionFacts]:
    """The program's genuine referees: a mix of phones, mailboxes of their own, weeks apart."""
    return [mailed(5000 + i, T0 + i * DAY / 3, f"friend{i % 20}", email=b"own%d" % i,
                   agent=f"Phone/{i % 15}") for i in range(n)]


def test_one_mailbox_behind_accounts_of_several_referrers_is_a_pool_whenever_they_came() -> None:
    """Cleared cookies, a new address each time, weeks apart: the operator's mailbox (its
    normalised hash) is still one person's."""
    pool = [mailed(i, T0 + i * 9 * DAY, f"ref{i % 3}", email=b"persona") for i in range(3)]
    rings = collusion_pools(pool + crowd())
    assert [r.accounts for r in rings] == [{("customer", f"c{i}") for i in range(3)}]
    assert "mailbox" in str(ring_flag_reasons(rings[0])[0]["message"])
    # Two people whose names normalise alike (a common name at two providers) are not.
    pair = [mailed(i, T0 + i * 9 * DAY, f"ref{i}", email=b"john.smith") for i in range(2)]
    assert collusion_pools(pair + crowd()) == []


def test_a_home_connection_behind_more_accounts_than_a_household_is_a_pool_over_weeks() -> None:
    slow = [mailed(i, T0 + i * 5 * DAY, f"ref{i % 4}", ip="203.0.113.50",
                   agent="Phone/odd") for i in range(8)]
    assert [r.accounts for r in collusion_pools(slow + crowd())] == [
        {("customer", f"c{i}") for i in range(8)}]
    # A family of five on one address, each referred by a different friend over weeks.
    family = [mailed(i, T0 + i * 5 * DAY, f"ref{i}", ip="203.0.113.60", agent="Phone/odd")
              for i in range(5)]
    assert collusion_pools(family + crowd()) == []
    # Colleagues behind an office's address on its standard computers, each buying what they
    # want: people, not an operator's accounts.
    office = [replace(mailed(i, T0 + i * 5 * DAY, f"ref{i % 4}", ip="203.0.113.70",
                             agent="Office/PC"), amount=amount)
              for i, amount in enumerate((1200, 3400, 900, 15000, 2200, 7800, 450, 3100, 999))]
    assert collusion_pools(office + crowd()) == []


def test_a_pool_takes_its_referrers_referees_on_the_operators_browsers() -> None:
    """Found by its mailbox on three accounts, the operator's other accounts came through
    residential proxies on his two phones: they join; a genuine friend of one of the
    referrers on a popular phone does not."""
    pool = [mailed(i, T0 + i * 4 * DAY, f"ref{i % 3}", email=b"persona",
                   agent="Operator/A", language="en-GB") for i in range(3)]
    proxied = [mailed(10 + i, T0 + i * 2 * DAY, f"ref{i % 3}", email=b"p%d" % i,
                      agent="Operator/A" if i % 2 else "Operator/B", language="en-GB")
               for i in range(10)]
    friend = [mailed(30, T0 + 5 * DAY, "ref1", email=b"friend", agent="Phone/3")]
    rings = collusion_pools(pool + proxied + friend + crowd())
    assert len(rings) == 1
    assert rings[0].accounts == {("customer", c.customer) for c in pool + proxied}
    # The program's genuine customers on the operator's phone model elsewhere stay out.
    lookalike = [mailed(40 + i, T0 + i * DAY, f"friend{i}", email=b"x%d" % i,
                        agent="Operator/B", language="en-GB") for i in range(3)]
    rings = collusion_pools(pool + proxied + friend + lookalike + crowd())
    assert not {("customer", c.customer) for c in lookalike} & rings[0].accounts


def test_one_cookie_at_one_home_behind_accounts_over_weeks_is_a_pool() -> None:
    """An operator's phone (its cookie) at his home, one new account every few days for
    several referrers: no burst, but one browser profile at one home is one person's. A
    public terminal's cookie is on no home connection, a family's members have their own."""
    home = [conv(i, T0 + i * 5 * DAY, f"ref{i % 4}", cookie="op-phone",
                 agent=("Phone/op", "203.0.113.77")) for i in range(6)]
    rings = collusion_pools(home + ordinary())
    assert [r.accounts for r in rings] == [{("customer", f"c{i}") for i in range(6)}]
    family = [conv(20 + i, T0 + i * 5 * DAY, f"ref{i}", cookie=f"own{i}",
                   agent=("Phone/same-model", "203.0.113.78")) for i in range(6)]
    kiosk = [conv(40 + i, T0 + i * 2 * DAY, f"ref{i % 5}", cookie="kiosk") for i in range(8)]
    assert collusion_pools(family + kiosk + ordinary()) == []


def test_an_operator_rotating_cookies_and_addresses_is_found_by_his_phones() -> None:
    """A few accounts now and then from his home (too few to be a pool on their own), the
    rest through other addresses with fresh cookies, weeks apart, for three referrers: his
    referrers' other referees came on the phones his home accounts came on, which the
    program's other customers rarely use."""
    home = [mailed(i, T0 + i * 6 * DAY, f"ref{i % 3}", ip="203.0.113.90",
                   agent=f"OpPhone/{i % 2}", language="es-MX") for i in range(3)]
    away = [mailed(10 + i, T0 + i * 4 * DAY + 3600, f"ref{i % 3}",
                   agent=f"OpPhone/{i % 2}", language="es-MX") for i in range(8)]
    rings = collusion_pools(home + away + crowd())
    assert [r.accounts for r in rings] == [{("customer", c.customer) for c in home + away}]
    # A family on one address, one phone model, each referred by a different friend whose
    # other referees came on the program's mix of phones: no pool.
    family = [mailed(100 + i, T0 + i * 6 * DAY, f"friend{i}", ip="203.0.113.91",
                     agent="Phone/3") for i in range(5)]
    assert collusion_pools(family + crowd()) == []


def test_an_audience_tied_to_two_referrers_by_namesakes_is_not_a_pool() -> None:
    """An influencer's followers abroad come on their country's phones, rare in the program;
    two of them share a mailbox's normalised name with a referee of another referrer each.
    The ties group the three referrers and the followers' phones are in excess, but most of
    the influencer's audience is on other phones: an audience, not an operator's accounts."""
    fans = [mailed(i, T0 + i * DAY / 2, "influencer", email=b"fan%d" % i,
                   agent=f"Fan/{i % 6}", language="pt-BR") for i in range(30)]
    fans[0] = replace(fans[0], email_hash=b"ana.silva")
    fans[1] = replace(fans[1], email_hash=b"joao.souza")
    namesakes = [mailed(100, T0 + 3 * DAY, "refA", email=b"ana.silva", agent="Fan/1",
                        language="pt-BR"),
                 mailed(101, T0 + 9 * DAY, "refB", email=b"joao.souza", agent="Fan/0",
                        language="pt-BR")]
    assert collusion_pools(fans + namesakes + crowd()) == []


def test_a_referrer_whose_referees_came_on_a_pools_phones_joins_it() -> None:
    """Found by a mailbox on three referrers' accounts, the pool's phones are its browsers; a
    fourth referrer whose every referee came on them, through proxies with fresh mailboxes,
    lent his link to the same operator. A referrer whose friends came on the program's
    phones stays out."""
    pool = [mailed(i, T0 + i * 4 * DAY, f"ref{i % 3}", email=b"persona",
                   agent=f"Operator/{i % 2}", language="en-GB") for i in range(3)]
    proxied = [mailed(10 + i, T0 + i * 2 * DAY, f"ref{i % 3}", email=b"p%d" % i,
                      agent=f"Operator/{i % 2}", language="en-GB") for i in range(6)]
    lent = [mailed(30 + i, T0 + i * 3 * DAY, "ref9", email=b"q%d" % i,
                   agent=f"Operator/{i % 2}", language="en-GB") for i in range(5)]
    rings = collusion_pools(pool + proxied + lent + crowd())
    assert len(rings) == 1
    assert {("customer", c.customer) for c in lent} <= rings[0].accounts
    assert "ref9" in str(ring_flag_reasons(rings[0])[0]["message"])
    assert not {("customer", c.customer) for c in crowd()} & rings[0].accounts


def test_a_pools_referees_on_the_programs_most_popular_phones_join_it_together() -> None:
    """The operator's phones are the program's best-selling models: no one of them is in
    excess among his referrers' other referees, but twelve referees on three phones are far
    more pairs on one phone than the program's mix gives twelve people. A genuine friend of a
    referrer on another phone stays out."""
    pool = [mailed(i, T0 + i * 4 * DAY, f"ref{i % 3}", email=b"persona",
                   agent="Phone/0", language="en-US") for i in range(3)]
    others = [mailed(10 + i, T0 + i * 2 * DAY, f"ref{i % 3}", email=b"p%d" % i,
                     agent=f"Phone/{(0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2)[i]}")
              for i in range(12)]
    friend = [mailed(40, T0 + 5 * DAY, "ref1", email=b"friend", agent="Phone/7")]
    rings = collusion_pools(pool + others + friend + crowd())
    assert len(rings) == 1
    assert rings[0].accounts == {("customer", c.customer) for c in pool + others}


def test_a_referrer_whose_referees_all_came_on_one_of_a_pools_phones_is_its_own_pool() -> None:
    """One phone of the operator's is also what a stacker resetting his own phone (or a shop
    tablet) looks like: a referrer the pool does not name whose referees all came on one of
    its phones is held as a pool of its own, not named in the operator's flag."""
    pool = [mailed(i, T0 + i * 4 * DAY, f"ref{i % 3}", email=b"persona",
                   agent=f"Operator/{i % 2}", language="en-GB") for i in range(3)]
    proxied = [mailed(10 + i, T0 + i * 2 * DAY, f"ref{i % 3}", email=b"p%d" % i,
                      agent=f"Operator/{i % 2}", language="en-GB") for i in range(6)]
    stacker = [mailed(30 + i, T0 + i * 3 * DAY, "ref9", email=b"q%d" % i,
                      agent="Operator/0", language="en-GB") for i in range(5)]
    rings = collusion_pools(pool + proxied + stacker + crowd())
    assert len(rings) == 2
    operator = next(r for r in rings if "ref0" in r.evidence["referrers"])  # type: ignore[operator]
    alone = next(r for r in rings if r is not operator)
    assert not {("customer", c.customer) for c in stacker} & operator.accounts
    assert alone.accounts == {("customer", c.customer) for c in stacker}
    assert alone.evidence["referrers"] == ["ref9"]
