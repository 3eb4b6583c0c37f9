"""A fraudulent referrer's genuine referrals against its anomalous ones (issue 13: "a
referrer's genuine referrals are not held on the referrer's reputation alone"): the
probability that a conversion is one of the anomalous ones, on hand-built mixtures."""

from __future__ import annotations

import pytest

from fraud.assess import Mixture, anomalous_probability
from fraud.signals import ConversionFacts

PURCHASE = ConversionFacts(1, "c1", 0.0, ("farm",), amount=1500)


def farm(anomalous: float, n: int) -> dict[tuple[str, bool], Mixture]:
    """A farm's purchases: its anomalous part on few browsers (which the program's genuine
    purchases rarely are) and in the market's common language (which half of them send)."""
    return {("farm", True): Mixture(anomalous, {"few_browsers": 0.95, "language": 0.96},
                                    {"few_browsers": 0.07, "language": 0.4}, n)}


@pytest.mark.parametrize(("anomalous", "n"), [(0.9, 31), (0.75, 12), (0.95, 60)])
def test_a_referral_showing_only_what_genuine_ones_show_is_not_held(anomalous: float, n: int
                                                                    ) -> None:
    """A friend who sends the market's language, as half of the program's buyers do, but not
    from one of the farm's browsers: its traits favour the genuine part (a likelihood ratio
    under 1), so the referrer's share of fraud alone does not make it one of the farm's."""
    mixtures = farm(anomalous, n)
    assert anomalous_probability(PURCHASE, "farm", {"language"}, mixtures) == 0.0
    assert anomalous_probability(PURCHASE, "farm", set(), mixtures) == 0.0
    # One on the farm's browsers shares what sets the farm apart.
    assert anomalous_probability(PURCHASE, "farm", {"few_browsers", "language"},
                                 mixtures) > 0.95
    assert anomalous_probability(PURCHASE, "farm", {"few_browsers"}, mixtures) > 0.5


@pytest.mark.parametrize("n", [5, 10, 19])
def test_a_referrer_anomalous_as_a_whole_keeps_its_prior(n: int) -> None:
    """A referrer whose mixture leaves less than one genuine conversion: its traffic is
    anomalous as a whole, and a conversion that lacks one of its traits is still its own."""
    mixtures = farm(1.0 - 0.9 / n, n)
    assert anomalous_probability(PURCHASE, "farm", {"language"}, mixtures) > 0.5


def test_lacking_only_what_half_the_farm_shows_does_not_release_it() -> None:
    """A farm's purchase in its language and at its click rhythm, but not on a burst day nor
    at the minimum amount (traits only half of the farm's purchases show): it lacks nothing
    that sets the farm apart, and stays one of the farm's."""
    mixtures = {("farm", True): Mixture(
        0.91, {"velocity": 0.53, "min_amount": 0.6, "language": 0.98, "even_clicks": 0.98},
        {"velocity": 0.012, "min_amount": 0.12, "language": 0.33, "even_clicks": 0.73}, 27)}
    assert anomalous_probability(PURCHASE, "farm", {"language", "even_clicks"},
                                 mixtures) > 0.8
    # A friend who sends another language lacks what sets the farm apart.
    assert anomalous_probability(PURCHASE, "farm", {"even_clicks"}, mixtures) == 0.0


def test_a_farm_purchase_off_the_minimum_but_on_two_of_its_traits_is_not_released() -> None:
    """A farm's purchase at full price (nearly all of the farm's are at the minimum) that
    shows its language and its click rhythm: the gate alone would release it (the likelihood
    ratio is just under 1); two tying anomalies shown are not reputation (population_reasons
    calls with gate=False), and its odds stay the farm's."""
    mixtures = {("farm", True): Mixture(
        0.94, {"min_amount": 0.93, "language": 0.99, "even_clicks": 0.99},
        {"min_amount": 0.13, "language": 0.3, "even_clicks": 0.67}, 39)}
    shown = {"language", "even_clicks"}
    assert anomalous_probability(PURCHASE, "farm", shown, mixtures) == 0.0
    assert anomalous_probability(PURCHASE, "farm", shown, mixtures, gate=False) > 0.9
