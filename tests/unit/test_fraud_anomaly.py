"""fraud.anomaly: the pyod detectors over a program's referrers, on plain data."""

from __future__ import annotations

import random
import re

from fraud.anomaly import FLAG_KIND, MIN_REFERRERS, RANK_AT, anomalous_referrers
from fraud.signals import ClickFacts, ConversionFacts, ProgramContext

DAY = 86400.0
PRICES = (900, 1500, 2500, 4000, 6500)  # 9.00 is the program's minimum amount


def program(ordinary: int, *, planted: bool, seed: int = 7
            ) -> tuple[list[ConversionFacts], ProgramContext]:
    """`ordinary` referrers with 12 purchases each from about 10 clicks a purchase, at any
    price, an hour or so after the click; and (planted) one like a farm: almost every purchase
    at the program's minimum amount, seconds after the click, on one Accept-Language."""
    rng = random.Random(seed)
    conversions: list[ConversionFacts] = []
    clicks: dict[str, int] = {}
    names = [f"ref{i:02d}" for i in range(ordinary)] + (["odd"] if planted else [])
    for ref in names:
        clicks[ref] = 12 * rng.randint(8, 12)
        for k in range(12):
            n = len(conversions) + 1
            at = rng.uniform(0, 60 * DAY)
            delay = rng.uniform(5, 40) if ref == "odd" else rng.lognormvariate(8.0, 1.2)
            amount = (PRICES[0] if ref == "odd" and k < 10
                      else rng.choice(PRICES[1:]) if rng.random() > 0.1 else PRICES[0])
            touch = ClickFacts(f"k{n}", at - delay, ref, f"v{n}", f"81.2.{n % 250}.{n % 200}",
                               f"d{n}", country="FR",
                               language="fr-FR" if ref == "odd" else
                               rng.choice(("fr-FR", "fr", "en-US", "fr-FR,en")))
            conversions.append(ConversionFacts(n, f"cust{n}", at, (ref,), country="FR",
                                               touches=(touch,), amount=amount))
    return conversions, ProgramContext(referrer_clicks=clicks)


def test_a_farm_like_referrer_is_named_with_its_furthest_features_in_words() -> None:
    conversions, context = program(30, planted=True, seed=1)
    found = anomalous_referrers(conversions, context)
    assert [u.referrer for u in found] == ["odd"]
    odd = found[0]
    assert odd.rank >= RANK_AT and (odd.position, odd.of) == (1, 31)
    reasons = {str(r["code"]): r for r in odd.reasons()}
    lead = odd.reasons()[0]
    assert lead["code"] == FLAG_KIND and lead["value"] == round(odd.rank, 4)
    assert "1 of 31 referrers" in str(lead["message"])
    # The features furthest from the typical referrer, both values in plain words: the
    # referrer's own share (with its count) and the typical referrer's.
    assert set(reasons) == {FLAG_KIND, "anomaly_median_delay", "anomaly_quick_share",
                            "anomaly_min_amount_share"}
    cheap = reasons["anomaly_min_amount_share"]
    assert re.fullmatch(r"100% of purchases at the program's minimum amount \(12 of 12; "
                        r"typical referrer: \d%\)", str(cheap["message"])), cheap
    assert cheap["value"] == 1.0
    assert isinstance(cheap["threshold"], float) and 0.1 < cheap["threshold"] < 1.0
    fast = reasons["anomaly_median_delay"]
    assert re.fullmatch(r"median click-to-conversion time \d+ s \(typical referrer: \d+ min\)",
                        str(fast["message"])), fast
    # Too fast is the suspicious side: the threshold is below the typical referrer's time.
    assert float(fast["value"]) < 60 < float(fast["threshold"])  # type: ignore[arg-type]
    table = odd.evidence()
    features = {f["feature"]: f for f in table["features"]}  # type: ignore[attr-defined]
    assert len(features) == 12 and features["min_amount_share"]["count"] == [12, 12]
    assert features["min_amount_share"]["z"] >= 4
    assert table["referrers_ranked"] == 31 and table["conversions"] == 12


def test_an_ordinary_program_names_nobody() -> None:
    for seed in (1, 2, 3):
        conversions, context = program(40, planted=False, seed=seed)
        assert anomalous_referrers(conversions, context) == []


def test_too_few_referrers_names_nobody() -> None:
    conversions, context = program(MIN_REFERRERS - 2, planted=True)
    assert anomalous_referrers(conversions, context) == []
    # Referrers with fewer than MIN_CONVERSIONS have no row: they do not make up the number.
    few = [c for c in program(40, planted=True)[0] if c.conversion_id % 12 < 4]
    assert anomalous_referrers(few, context) == []
