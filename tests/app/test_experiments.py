"""Incentive experiments: sticky variant assignment, rewards under the referrer's variant, and
GET /api/v1/reports/experiments (per-variant money by hand, significance, false positives)."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import asyncpg
import numpy as np
import pytest

from tests.helpers import auth
from tests.shop import Shop, ShopFactory
from tracker.finance import queries as finance_queries
from tracker.finance.clearance import release
from tracker.finance.experiments import (
    LEVEL,
    bootstrap_sums,
    exact_interval,
    fisher_p,
    holm,
    significance,
)
from tracker.programs.variants import Variant, assign

# "$50/$50 vs $75/$25", as percentages and flat amounts: the referrer's share is a percentage
# of the purchase (so it is in the purchase's currency), the referee's a flat amount (in the
# program's currency).
FIFTY = {"name": "50/50", "weight": 1, "rules": [
    {"beneficiary": "referrer", "on": "purchase", "percent": 10},
    {"beneficiary": "referee", "on": "purchase", "flat": 500}]}
SEVENTY_FIVE = {"name": "75/25", "weight": 1, "rules": [
    {"beneficiary": "referrer", "on": "purchase", "percent": 15},
    {"beneficiary": "referee", "on": "purchase", "flat": 250}]}
PLAIN = [{"beneficiary": "referrer", "on": "purchase", "flat": 2000}]




async def _report(shop: Shop, program: str = "acme") -> dict[str, Any]:
    resp = await shop.client.get(f"/api/v1/reports/experiments?program={program}",
                                 headers=auth(shop.tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def _referrers(shop: Shop) -> dict[str, str | None]:
    resp = await shop.client.get("/api/v1/referrers?program=acme&limit=1000",
                                 headers=auth(shop.tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    return {r["external_id"]: r["variant"] for r in (await resp.json())["items"]}


# -- assignment (pure) ---------------------------------------------------------------------------


def test_assignment_is_deterministic_weighted_and_order_free() -> None:
    two = [Variant("a", 1), Variant("b", 3)]
    ids = [f"cust-{i}" for i in range(8000)]
    first = [assign(7, i, two) for i in ids]
    assert first == [assign(7, i, list(reversed(two))) for i in ids]
    share_b = Counter(first)["b"] / len(ids)
    assert abs(share_b - 0.75) < 0.02  # weight 3 of 4
    # Another program draws afresh: the same ids do not fall the same way.
    assert sum(a != b for a, b in zip(first, [assign(8, i, two) for i in ids],
                                      strict=True)) > 1000
    assert assign(7, "x", []) is None


def test_a_variant_added_later_only_ever_takes_referrers_to_itself() -> None:
    before = [Variant("a", 1), Variant("b", 1)]
    after = [*before, Variant("c", 2)]
    ids = [f"r{i}" for i in range(4000)]
    moved = [(assign(1, i, before), assign(1, i, after)) for i in ids]
    assert all(new in (old, "c") for old, new in moved)
    # ... and it takes its weight's share of them (2 of 4), evenly from both.
    to_c = Counter(old for old, new in moved if new == "c")
    assert abs(sum(to_c.values()) / len(ids) - 0.5) < 0.03
    assert abs(to_c["a"] - to_c["b"]) < 0.1 * sum(to_c.values())


# -- statistics (pure) ---------------------------------------------------------------------------


def test_the_statistics_against_known_values() -> None:
    # Fisher's tea-tasting table: two-sided p = 0.4857 (R: fisher.test(matrix(c(3,1,1,3),2))).
    assert fisher_p(3, 4, 1, 4) == pytest.approx(0.4857, abs=1e-4)
    assert fisher_p(0, 10, 0, 12) == 1.0
    # Clopper-Pearson for 0 of 10: [0, 1 - 0.025 ** (1 / 10)].
    lo, hi = exact_interval(0, 10) or (None, None)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    assert exact_interval(0, 0) is None
    # Holm: sorted p times (m - rank), made monotone, capped at 1.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_bootstrap_draws_only_referrers_with_money_yet_resamples_all_of_them() -> None:
    # 1000 referrers, 10 with 100 each: the mean per referrer is 1 and its bootstrap spread is
    # sd / sqrt(n) = sqrt(0.01 * 0.99) * 100 / sqrt(1000) = 0.3146.
    values = np.full((10, 1), 100.0)
    sums = bootstrap_sums(values, 1000, np.random.default_rng(1), resamples=4000)[:, 0]
    assert sums.mean() / 1000 == pytest.approx(1.0, abs=0.03)
    assert (sums / 1000).std() == pytest.approx(0.3146, rel=0.06)


def test_a_large_variants_intervals_match_resampling() -> None:
    """Beyond LARGE referrers with money the sums are drawn from the bootstrap's normal limit:
    on heavy-tailed revenue the intervals (and ROI's) agree with real resampling."""
    rng = np.random.default_rng(5)
    m, n = 3000, 9000
    money = np.column_stack([rng.lognormal(8, 1.2, m), rng.choice([0, 1000, 2000], m)])
    limit = bootstrap_sums(money, n, np.random.default_rng(1))
    resampled = bootstrap_sums(money, n, np.random.default_rng(1), large=10**9)
    for sums in (limit, resampled):
        assert sums.shape == (1000, 2)
    bounds = [np.quantile(s, [0.025, 0.975], axis=0) for s in (limit, resampled)]
    assert bounds[0] == pytest.approx(bounds[1], rel=0.01)
    roi = [np.quantile((s[:, 0] - s[:, 1]) / s[:, 1], [0.025, 0.975]) for s in (limit,
                                                                             resampled)]
    assert roi[0] == pytest.approx(roi[1], rel=0.01)


def test_no_winner_without_a_significant_difference_over_all_others() -> None:
    assert significance([("a", 10, 100), ("b", 30, 100)]).winner == "b"
    assert significance([("a", 10, 100), ("b", 13, 100)]).winner is None
    # b is clearly above a but not above c: no winner; c above both but not significantly so
    # above b.
    verdict = significance([("a", 10, 200), ("b", 40, 200), ("c", 45, 200)])
    assert verdict.winner is None and len(verdict.comparisons) == 3
    assert significance([("a", 10, 200), ("b", 12, 200), ("c", 60, 200)]).winner == "c"
    assert significance([("a", 5, 10), ("b", 0, 0)]).winner is None


@pytest.mark.parametrize(("arms", "referrers"), [(2, 200), (3, 150)])
def test_the_false_positive_rate_is_at_most_the_level(arms: int, referrers: int) -> None:
    """No real difference (every arm converts at 15%): over many seeded experiments some
    comparison is called significant (the family-wise error) in at most LEVEL of them, near
    it (Fisher's test is a little conservative: not blind), and a winner, which needs all of
    its comparisons, no more often. bench/experiments.py runs many more seeds."""
    seeds = 600
    rng = np.random.default_rng(20261206 + arms)
    wins = errors = 0
    for _ in range(seeds):
        converted = rng.binomial(referrers, 0.15, size=arms)
        verdict = significance([(f"v{i}", int(k), referrers) for i, k in enumerate(converted)])
        wins += verdict.winner is not None
        errors += any(c.significant for c in verdict.comparisons)
    # Within the binomial noise of 600 runs (sd about 0.007 at 0.03).
    assert 0.01 <= errors / seeds <= LEVEL + 0.02, errors / seeds
    assert wins <= errors


# -- assignment through the API and clearance ----------------------------------------------------


async def test_variants_are_sticky_when_the_variants_change(
        open_shop: ShopFactory, conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": PLAIN,
                                                       "variants": [FIFTY, SEVENTY_FIVE]}})
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    names = [f"cust-{i}" for i in range(30)]
    for name in names:
        await shop.referrer(name)
    before = await _referrers(shop)
    both = [Variant("50/50", 1), Variant("75/25", 1)]
    assert before == {n: assign(pid, n, both) for n in names}
    assert set(before.values()) == {"50/50", "75/25"}

    # A third variant weighing 100 would take nearly everyone who was not assigned yet.
    heavy = {"name": "heavy", "weight": 100, "rules": PLAIN}
    resp = await shop.client.patch("/api/v1/programs/acme", json={"settings": {
        "hold_days": 0, "reward": {"rules": PLAIN, "variants": [FIFTY, SEVENTY_FIVE, heavy]}}},
        headers=auth(shop.tokens["admin"]))
    assert resp.status == 200, await resp.text()
    three = [*both, Variant("heavy", 100)]
    assert sum(assign(pid, n, three) == "heavy" for n in names) > 25  # had they not been kept
    for name in [f"new-{i}" for i in range(10)]:
        await shop.referrer(name)
    after = await _referrers(shop)
    assert {n: after[n] for n in names} == before  # nobody moved
    assert {n: v for n, v in after.items() if n.startswith("new-")} == {
        f"new-{i}": assign(pid, f"new-{i}", three) for i in range(10)}
    # A referrer made without the API (before variants, or by another path) is assigned by
    # clearance, by the same hash, before its first reward.
    await conn.execute("INSERT INTO referrers (program_id, external_id) VALUES ($1, 'raw')", pid)
    await release(conn)
    assert (await _referrers(shop))["raw"] == assign(pid, "raw", three)

    # Each reward carries its referrer's variant and was made by that variant's rules.
    first_50 = next(n for n in names if before[n] == "50/50")
    first_75 = next(n for n in names if before[n] == "75/25")
    await shop.buy(first_50, "p50", "c50", amount=10000)
    await shop.buy(first_75, "p75", "c75", amount=10000)
    await release(conn)
    got = {(r["payee"], r["variant"], r["amount"], r["beneficiary"])
           for r in (await shop.rewards()).values()}
    assert got == {(first_50, "50/50", 1000, "referrer"), ("c50", "50/50", 500, "referee"),
                   (first_75, "75/25", 1500, "referrer"), ("c75", "75/25", 250, "referee")}
    resp = await shop.client.get("/api/v1/rewards?program=acme",
                                 headers=auth(shop.tokens["finance"]))
    assert {(r["payee"], r["variant"]) for r in (await resp.json())["items"]} == {
        (first_50, "50/50"), ("c50", "50/50"), (first_75, "75/25"), ("c75", "75/25")}
    # ... and in the program's webhook events.
    await conn.execute("""UPDATE programs SET settings = settings ||
                          '{"webhook_url": "https://hooks.acme.test/in"}'""")
    ids = [r["id"] for r in (await shop.rewards()).values()]
    await finance_queries.enqueue_webhooks(conn, "reward.created", ids)
    hooks = [json.loads(p) for p in await conn.fetchval(
        "SELECT array_agg(payload::text) FROM webhook_outbox WHERE event = 'reward.created'")]
    assert {(h["reward"]["payee"], h["reward"]["variant"]) for h in hooks} == {
        (first_50, "50/50"), ("c50", "50/50"), (first_75, "75/25"), ("c75", "75/25")}
    await conn.execute("UPDATE programs SET settings = settings - 'webhook_url'")

    # The 75/25 arm ends: its referrers keep their variant, new rewards follow reward.rules.
    resp = await shop.client.patch("/api/v1/programs/acme", json={"settings": {
        "hold_days": 0, "reward": {"rules": PLAIN, "variants": [FIFTY, heavy]}}},
        headers=auth(shop.tokens["admin"]))
    assert resp.status == 200, await resp.text()
    await shop.buy(first_75, "p75b", "c75b", amount=10000)
    await release(conn)
    assert (await _referrers(shop))[first_75] == "75/25"
    after_end = (await shop.rewards())[f"p75b/{first_75}"]
    assert (after_end["variant"], after_end["amount"]) == (None, 2000)


async def test_a_program_without_variants_assigns_nothing(
        open_shop: ShopFactory, conn: asyncpg.Connection) -> None:
    shop = await open_shop({"hold_days": 0, "reward": {"rules": PLAIN}})
    await shop.referrer("alice")
    await shop.buy("alice", "p1", "c1")
    await release(conn)
    assert (await _referrers(shop)) == {"alice": None}
    reward = (await shop.rewards())["p1/alice"]
    assert (reward["variant"], reward["amount"]) == (None, 2000)
    report = await _report(shop)
    assert report["variants"] == [] and report["winner"] is None


# -- the report: money by hand -------------------------------------------------------------------


async def test_per_variant_money_by_hand(open_shop: ShopFactory, conn: asyncpg.Connection
                                         ) -> None:
    """Two arms, the same story in each, told with the arm's rules: a purchase in USD, one in
    EUR refunded in part after its rewards were approved (reversed, clawed back), one charged
    back before (reversed), one whose rewards are fraud-flagged (excluded), and a referrer who
    never converts."""
    shop = await open_shop({"hold_days": 0, "reward": {
        "currency": "USD", "rules": PLAIN, "variants": [FIFTY, SEVENTY_FIVE]}})
    arms: dict[str, list[str]] = {"50/50": [], "75/25": []}
    i = 0
    while min(len(v) for v in arms.values()) < 3:
        i += 1
        await shop.referrer(f"ref-{i}")
        variant = (await _referrers(shop))[f"ref-{i}"]
        assert variant is not None
        arms[variant].append(f"ref-{i}")
    sizes = {v: len(refs) for v, refs in arms.items()}
    pid = await conn.fetchval("SELECT id FROM programs WHERE slug = 'acme'")
    for variant, (x1, x2, _x3) in ((v, refs[:3]) for v, refs in arms.items()):
        tag = variant[:2]
        await shop.buy(x1, f"{tag}-p1", f"{tag}-c1", amount=10000, currency="USD")
        await shop.buy(x1, f"{tag}-p2", f"{tag}-c2", amount=20000, currency="EUR")
        await shop.buy(x2, f"{tag}-p3", f"{tag}-c3", amount=8000, currency="USD")
        await shop.convert(f"{tag}-x3", f"{tag}-c3", type_="chargeback",
                           original=f"{tag}-p3", amount=8000)
        await shop.buy(x2, f"{tag}-p4", f"{tag}-c4", amount=4000, currency="USD")
        rid = await conn.fetchval(
            "SELECT id FROM referrers WHERE program_id = $1 AND external_id = $2", pid, x1)
        await conn.execute("INSERT INTO shares (program_id, referrer_id, channel, occurred_at, "
                           "source) VALUES ($1, $2, 'email', now(), 'api'), "
                           "($1, $2, 'sms', now(), 'api')", pid, rid)
    await release(conn)
    for variant in arms:
        tag = variant[:2]
        await shop.convert(f"{tag}-x2", f"{tag}-c2", type_="refund", original=f"{tag}-p2",
                           amount=5000, currency="EUR")
    await release(conn)
    # Finance's view of p4: flagged as fraud (as a scan would), so it counts for nothing.
    await conn.execute(
        """UPDATE rewards r SET status = 'flagged' FROM conversions c
           WHERE c.program_id = r.program_id AND c.id = r.conversion_id
             AND c.event_id LIKE '%-p4'""")
    # p1 shared half and half with x2 (as a multi-touch model would credit it): the money is
    # the same, and c1 is still one customer of the arm, not one per referrer.
    for variant, refs in arms.items():
        x2 = refs[1]
        conversion = await conn.fetchval(
            "SELECT id FROM conversions WHERE event_id = $1", f"{variant[:2]}-p1")
        await conn.execute("UPDATE credits SET credit = 0.5 WHERE conversion_id = $1",
                           conversion)
        await conn.execute(
            """INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit)
               SELECT $1, $2, id, 'linear', 0.5 FROM referrers
               WHERE program_id = $1 AND external_id = $3""", pid, conversion, x2)
    statuses = Counter((r["variant"], r["status"]) for r in (await shop.rewards()).values())
    assert statuses == {(v, s): n for v in arms
                        for s, n in (("approved", 2), ("reversed", 4), ("flagged", 2))}
    clawbacks = await conn.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = "
                                    "'clawback'")
    assert clawbacks == 4  # p2's two cash rewards in each arm were approved, then refunded

    report = await _report(shop)
    assert report["program"] == "acme" and report["currencies"] == ["EUR", "USD"]
    assert report["test"]["method"] == "fisher_exact" and report["level"] == 0.05
    by = {v["name"]: v for v in report["variants"]}
    referrer_pct, referee_flat = {"50/50": (10, 500), "75/25": (15, 250)}, 0
    for variant, n in sizes.items():
        got = by[variant]
        pct, referee_flat = referrer_pct[variant]
        assert (got["referrers"], got["shares"], got["clicks"]) == (n, 2, 4)
        # c1, c2, c3 (a chargeback does not undo a referral); c4's rewards are fraud-flagged.
        assert (got["referred_customers"], got["converting_referrers"]) == (3, 2)
        assert got["conversion_rate"] == round(2 / n, 4)
        assert got["customers_per_click"] == 0.75
        assert (got["rewards"], got["fraud_flagged_rewards"], got["fraud_rate"]) == (8, 2, 0.25)
        # USD: p1 10000 (p3 charged back to 0, p4 excluded); cost: p1's referrer pct of 10000
        # plus its referee's flat (p2 and p3 reversed: nothing; p4 flagged: nothing).
        usd_cost = 10000 * pct // 100 + referee_flat
        usd = got["money"]["USD"]
        assert (usd["revenue"], usd["incentive_cost"]) == (10000, usd_cost)
        assert (usd["incentive_cost_referrer"], usd["incentive_cost_referee"]) == (
            10000 * pct // 100, referee_flat)
        assert usd["roi"] == round((10000 - usd_cost) / usd_cost, 4)
        assert usd["revenue_per_referrer"] == round(10000 / n, 2)
        # EUR: p2 20000 less the 5000 refunded; its 10%/15% reward was clawed back.
        eur = got["money"]["EUR"]
        assert (eur["revenue"], eur["incentive_cost"], eur["roi"]) == (15000, 0, None)
        lo, hi = usd["revenue_per_referrer_ci"]
        assert 0 <= lo <= usd["revenue_per_referrer"] <= hi
        assert got["conversion_rate_ci"][0] < got["conversion_rate"] < \
            got["conversion_rate_ci"][1]
    assert by["50/50"]["money"]["USD"]["roi"] == round(8500 / 1500, 4)
    assert by["75/25"]["money"]["USD"]["roi"] == round(8250 / 1750, 4)
    assert report["winner"] is None  # 2 of a handful each: nothing to conclude
    # The same answer twice (the bootstrap is seeded).
    again = await _report(shop)  # computed now each time (no reports job ran): its own time
    assert again.pop("computed_at") >= report.pop("computed_at") and again == report


# -- the report: significance on generated experiments -------------------------------------------


async def _experiment(conn: asyncpg.Connection, slug: str, arms: dict[str, tuple[int, float]],
                      seed: int) -> int:
    """A program whose referrers are already in their arms (name: (referrers, rate)); each
    converts (one credited purchase of 5000 USD) with the arm's rate."""
    variants = [{"name": name, "weight": 1, "rules": PLAIN} for name in arms]
    pid: int = await conn.fetchval(
        "INSERT INTO programs (slug, name, destination_domains, settings) "
        "VALUES ($1, $1, '{acme.test}', $2::jsonb) RETURNING id", slug,
        json.dumps({"reward": {"rules": PLAIN, "variants": variants}}))
    rng = random.Random(seed)
    people = [(f"{name}-{i}", name, rng.random() < rate)
              for name, (n, rate) in arms.items() for i in range(n)]
    ids = await conn.fetch(
        """INSERT INTO referrers (program_id, external_id, variant)
           SELECT $1, e, v FROM unnest($2::text[], $3::text[]) AS t(e, v) RETURNING id""",
        pid, [p[0] for p in people], [p[1] for p in people])
    buyers = [(r["id"], p[0]) for r, p in zip(ids, people, strict=True) if p[2]]
    conversions = await conn.fetch(
        """INSERT INTO conversions (program_id, event_id, type, customer_id, amount, currency,
                                    occurred_at, body_hash, attributed_at)
           SELECT $1, 'order-' || e, 'purchase', 'cust-' || e, 5000, 'USD', now(), '\\x00',
                  now()
           FROM unnest($2::text[]) AS t(e) RETURNING id""", pid, [b[1] for b in buyers])
    await conn.executemany(
        "INSERT INTO credits (program_id, conversion_id, referrer_id, model, credit) "
        "VALUES ($1, $2, $3, 'last_click', 1)",
        [(pid, c["id"], b[0]) for c, b in zip(conversions, buyers, strict=True)])
    return pid


async def _api_report(client: Any, tokens: dict[str, str], slug: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/reports/experiments?program={slug}",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def test_a_real_difference_is_significant_and_none_is_not(
        client: Any, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await _experiment(conn, "real", {"50/50": (300, 0.10), "75/25": (300, 0.25)}, seed=1)
    await _experiment(conn, "null", {"50/50": (300, 0.15), "75/25": (300, 0.15)}, seed=2)
    real = await _api_report(client, tokens, "real")
    assert real["winner"] == "75/25"
    (comparison,) = real["comparisons"]
    assert comparison["significant"] and comparison["p_value"] < 0.01
    assert real["test"]["correction"] == "none"
    rates = {v["name"]: v for v in real["variants"]}
    # Each arm's interval holds its true rate; they do not overlap.
    assert rates["50/50"]["conversion_rate_ci"][0] < 0.10 < rates["50/50"]["conversion_rate_ci"][1]
    assert rates["75/25"]["conversion_rate_ci"][0] < 0.25 < rates["75/25"]["conversion_rate_ci"][1]
    assert rates["50/50"]["conversion_rate_ci"][1] < rates["75/25"]["conversion_rate_ci"][0]
    # Revenue per referrer: 5000 x the rate, within its bootstrap interval.
    usd = rates["75/25"]["money"]["USD"]
    assert usd["revenue"] == 5000 * rates["75/25"]["converting_referrers"]
    assert usd["revenue_per_referrer_ci"][0] < usd["revenue_per_referrer"] < \
        usd["revenue_per_referrer_ci"][1]

    null = await _api_report(client, tokens, "null")
    assert null["winner"] is None
    assert not null["comparisons"][0]["significant"]


async def test_three_variants_are_compared_in_pairs_with_holms_correction(
        client: Any, tokens: dict[str, str], conn: asyncpg.Connection) -> None:
    await _experiment(conn, "three", {"a": (250, 0.10), "b": (250, 0.11), "c": (250, 0.30)},
                      seed=3)
    report = await _api_report(client, tokens, "three")
    assert report["test"]["correction"] == "holm" and report["test"]["comparisons"] == 3
    assert report["winner"] == "c"
    pairs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert not pairs[("a", "b")]["significant"]
    assert pairs[("a", "c")]["significant"] and pairs[("b", "c")]["significant"]
    raw = [c["p_value"] for c in report["comparisons"]]
    assert [c["p_adjusted"] for c in report["comparisons"]] == pytest.approx(holm(raw),
                                                                             abs=1e-6)


async def test_an_unknown_program_is_a_404_and_the_program_is_required(
        client: Any, tokens: dict[str, str]) -> None:
    resp = await client.get("/api/v1/reports/experiments?program=nope",
                            headers=auth(tokens["viewer"]))
    assert resp.status == 404
    resp = await client.get("/api/v1/reports/experiments", headers=auth(tokens["viewer"]))
    assert resp.status == 422
    resp = await client.get("/api/v1/reports/experiments?program=x",
                            headers=auth(tokens["integration"]))
    assert resp.status == 403
