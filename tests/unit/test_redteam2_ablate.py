"""The red team's ablation (bench/redteam2/ablate.py): stored reasons re-combined by the engine's
own function reproduce the stored risk and status, and without a family give the decision the
engine's rule gives the rest."""

from __future__ import annotations

from typing import Any

from bench.redteam2.ablate import (
    FULL,
    ablate,
    check,
    counterfactual,
    engine_reason,
    groups,
    program_rules,
)
from bench.redteam2.score import score
from fraud.assess import FAMILIES, combine, decision_reason
from fraud.signals import Reason
from tracker.finance.clearance import verdict

RULES = program_rules({"hold_days": 0})  # review_at 0.5, reject_at 0.9 by default

IDENTITY = Reason("same_mailbox", "same mailbox", "a", "b", 0.95, "identity", True)
NETWORK = Reason("shared_ip", "shared address", "1.2.3.4", 1, 0.6, "network")
NETWORK_WEAK = Reason("shared_slash24", "shared /24", "1.2.3.0/24", 1, 0.3, "network")
CLICK = Reason("fast_conversion", "fast", 3, 10, 0.7, "click")
POPULATION = Reason("referrer_rate", "rate", 0.9, 0.1, 0.7, "population")


def reward(event: str, reasons: list[Reason], **kw: Any) -> dict[str, Any]:
    """A referrer reward as GET /api/v1/rewards answers it after clearance: the risk the
    engine gave, its status, the stored reasons (with the decision's own note)."""
    risk = combine(reasons)
    told = [r.as_dict() for r in reasons]
    if risk >= 0.5:
        told.append(decision_reason(reasons, risk).as_dict())
    return {"id": int(event.removeprefix("e")), "event_id": event, "beneficiary": "referrer",
            "status": verdict(RULES, risk), "risk_score": risk, "reasons": told,
            "decided_by": "system:clearance", **kw}


def without(name: str, rewards: list[dict[str, Any]]) -> list[str]:
    return [r["status"] for r in counterfactual(rewards, RULES, groups()[name])]


def test_a_stored_reason_reads_back_as_the_engines_and_the_decision_note_is_left_out() -> None:
    for r in (IDENTITY, NETWORK, CLICK):
        assert engine_reason(r.as_dict()) == r
    assert engine_reason(decision_reason([IDENTITY], 0.95).as_dict()) is None
    assert engine_reason({"code": "x", "message": "no weight"}) is None
    # A reason stored without a family counts by its code, as the engine's combine does.
    bare = engine_reason({"code": "finance_model", "message": "m", "value": 0.99,
                          "threshold": 0.99, "weight": 0.3})
    assert bare is not None and bare.family == "" and not bare.strong


def test_every_family_of_the_engine_has_a_line() -> None:
    names = set(groups())
    assert {f"without {family}" for family in FAMILIES} <= names
    assert {FULL, "without supervised model"} <= names


def test_recombined_risk_and_status_match_the_stored_ones_and_a_change_is_caught() -> None:
    rewards = [reward("e1", [IDENTITY, NETWORK]), reward("e2", [NETWORK]),
               reward("e3", [NETWORK_WEAK]), reward("e4", [CLICK, POPULATION])]
    assert [r["status"] for r in rewards] == ["rejected", "flagged", "approved", "rejected"]
    ok = check(rewards, RULES)
    assert (ok["decided"], ok["risk_mismatch"], ok["status_mismatch"]) == (4, 0, 0)
    assert without(FULL, rewards) == [r["status"] for r in rewards]
    tampered = [dict(rewards[0], risk_score=0.5), dict(rewards[1], status="approved")]
    bad = check(tampered, RULES)
    assert (bad["risk_mismatch"], bad["status_mismatch"]) == (1, 1)


def test_without_a_family_the_rest_decides_by_the_engines_rule() -> None:
    rewards = [reward("e1", [IDENTITY, NETWORK]), reward("e2", [NETWORK, NETWORK_WEAK]),
               reward("e3", [CLICK, POPULATION])]
    # Strong identity alone still rejects; the network alone can at most flag.
    assert without("without network", rewards) == ["rejected", "approved", "rejected"]
    assert without("without identity", rewards) == ["flagged", "flagged", "rejected"]
    # A family counts once: dropping the network drops both its reasons.
    assert without("without click", rewards) == ["rejected", "flagged", "flagged"]
    assert without("without population", rewards)[2] == "flagged"


def test_statuses_clearance_did_not_give_by_risk_stay() -> None:
    rewards = [reward("e1", [IDENTITY], status="reversed"),
               reward("e2", [IDENTITY], status="rejected", decided_by="finance@example.com"),
               reward("e3", [NETWORK], status="pending")]
    assert without("without identity", rewards) == ["reversed", "rejected", "pending"]
    assert without("without network", rewards) == ["reversed", "rejected", "pending"]


def test_the_programs_thresholds_decide() -> None:
    strict = program_rules({"review_at": 0.2, "reject_at": 0.55, "reject_action": "flag"})
    rewards = [reward("e1", [IDENTITY, NETWORK_WEAK])]
    assert [r["status"] for r in counterfactual(rewards, strict, groups()["without identity"])
            ] == ["flagged"]  # the network's 0.3 is over review_at 0.2 here
    assert without("without identity", rewards) == ["approved"]  # and under the default 0.5


def test_the_full_line_scores_as_the_run_and_an_ablation_moves_recall() -> None:
    labels: dict[str, dict[str, Any]] = {
        "e1": {"fraud": True, "refunded": False, "mech": "self_referral", "variant": "alias",
               "evasive": False, "code": "a", "tags": []},
        "e2": {"fraud": True, "refunded": False, "mech": "click_spam", "variant": "blanket",
               "evasive": False, "code": "b", "tags": []},
        "e3": {"fraud": False, "refunded": False, "mech": None, "variant": None,
               "evasive": False, "code": "c", "tags": ["family"]},
    }
    rewards = [reward("e1", [IDENTITY]), reward("e2", [POPULATION]),
               reward("e3", [NETWORK])]
    out = ablate(labels, [], rewards, [], {"hold_days": 0})
    normal = score(labels, [], rewards, [])
    full = out["scores"][FULL]
    assert {k: full[k] for k in ("precision", "recall", "clean_held", "recall_by_mechanism")} \
        == {k: normal[k] for k in ("precision", "recall", "clean_held", "recall_by_mechanism")}
    assert (normal["recall"], normal["clean_held"]) == (1.0, 1.0)
    no_identity = out["scores"]["without identity"]
    assert no_identity["recall_by_mechanism"]["self_referral"]["recall"] == 0.0
    assert no_identity["recall"] == 0.5
    assert out["scores"]["without network"]["clean_held"] == 0.0
    assert out["changed"]["without identity"] == 1
    assert out["fired"]["without network"] == {"with_reason": 1, "decisive": 1}
