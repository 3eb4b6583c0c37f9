"""`refguard fraud backtest`: replay the latest scan's reasons under other thresholds, reason
weights or disabled reasons, and list the rewards whose outcome would change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from fraud.assess import combine_evidence
from tracker.scoring import queries


class BacktestSettingsInvalid(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Replay:
    review_at: float
    reject_at: float
    weights: dict[str, float]
    disabled: frozenset[str]

    @classmethod
    def parse(cls, raw: object, current: dict[str, Any]) -> Replay:
        if not isinstance(raw, dict):
            raise BacktestSettingsInvalid("the settings file must hold a JSON object")
        unknown = sorted(set(raw) - {"review_at", "reject_at", "weights", "disabled_reasons"})
        if unknown:
            raise BacktestSettingsInvalid(f"unknown setting {unknown[0]!r}")
        review = raw.get("review_at", current.get("review_at", 0.5))
        reject = raw.get("reject_at", current.get("reject_at", 0.9))
        for name, value in (("review_at", review), ("reject_at", reject)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= 1:
                raise BacktestSettingsInvalid(f"{name} must be a number between 0 and 1")
        if review > reject:
            raise BacktestSettingsInvalid("review_at must not exceed reject_at")
        weights = raw.get("weights", {})
        if not isinstance(weights, dict) or not all(
                isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
                and 0 <= v <= 1 for k, v in weights.items()):
            raise BacktestSettingsInvalid("weights must map reason codes to numbers in [0, 1]")
        disabled = raw.get("disabled_reasons", [])
        if not isinstance(disabled, list) or not all(isinstance(d, str) for d in disabled):
            raise BacktestSettingsInvalid("disabled_reasons must be a list of reason codes")
        return cls(float(review), float(reject), {k: float(v) for k, v in weights.items()},
                   frozenset(disabled))

    def status(self, score: float) -> str:
        if score >= self.reject_at:
            return "rejected"
        if score >= self.review_at:
            return "flagged"
        return "approved"

    def rescore(self, reasons: list[dict[str, Any]]) -> float:
        """The risk the scan's evidence model (fraud.assess.combine_evidence) gives these
        reasons under the replay's weights; reasons stored before families existed count as
        a family of their own each."""
        items = []
        for reason in reasons:
            code = str(reason.get("code"))
            if code in self.disabled:
                continue
            weight = self.weights.get(code, float(reason.get("weight", 0.0)))
            items.append((str(reason.get("family") or code), weight,
                          bool(reason.get("strong", False))))
        return combine_evidence(items)


@dataclass(frozen=True, slots=True)
class Change:
    program: str
    event_id: str
    before: str
    after: str
    score_before: float
    score_after: float
    reasons: tuple[str, ...]


async def backtest(conn: asyncpg.Connection, raw_settings: object, slug: str | None = None
                   ) -> tuple[list[Change], int]:
    """Conversions whose outcome would change under other thresholds or reason weights, and
    how many stored risk assessments were replayed. Replays the latest scan's reasons."""
    changes: list[Change] = []
    replayed = 0
    for program in await queries.programs_named(conn, slug):
        now = Replay.parse({}, program.settings)
        then = Replay.parse(raw_settings, program.settings)
        for row in await queries.stored_risks(conn, program.id):
            replayed += 1
            before = now.status(row.score)
            score = then.rescore(row.reasons)
            after = then.status(score)
            if before != after:
                changes.append(Change(program.slug, row.event_id, before, after, row.score,
                                      score, tuple(str(r.get("code")) for r in row.reasons)))
    return changes, replayed
