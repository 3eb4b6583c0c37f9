"""The pre-written share message: placeholders filled, nothing a merchant writes breaks it."""

from __future__ import annotations

from tracker.asks.messages import reward_text, share_message

REWARD = {"currency": "USD", "rules": [
    {"beneficiary": "referrer", "on": "signup", "flat": 100},
    {"beneficiary": "referrer", "on": "purchase", "flat": 1000},
    {"beneficiary": "referee", "on": "purchase", "percent": 12.5},
]}


def test_the_purchase_rule_names_the_reward_of_each_side() -> None:
    assert reward_text(REWARD, "referrer") == "10.00 USD"
    assert reward_text(REWARD, "referee") == "12.5%"
    assert reward_text({"currency": "JPY", "rules": [
        {"beneficiary": "referee", "on": "signup", "flat": 500}]}, "referee") == "500 JPY"
    assert reward_text({"rules": []}, "referrer") == ""


def test_a_template_gets_every_placeholder_and_keeps_other_braces() -> None:
    settings = {"reward": REWARD, "share": {
        "message": "{name}: {reward} for me, {referee_reward} for you {link} {unknown} {"}}
    assert share_message(settings, name="Ann", link="https://s.example/r/ab") == (
        "Ann: 10.00 USD for me, 12.5% for you https://s.example/r/ab {unknown} {")
    # No name known: the placeholder is empty, never the word None.
    assert share_message(settings, name=None, link="L").startswith(": 10.00 USD")


def test_without_a_template_the_default_names_the_friends_reward_only_when_there_is_one() -> None:
    with_reward = share_message({"reward": REWARD}, name=None, link="L")
    assert "You get 12.5%" in with_reward and with_reward.endswith("L")
    without = share_message({"reward": {"currency": "USD", "rules": []}}, name=None, link="L")
    assert "You get" not in without and without.endswith("L")
