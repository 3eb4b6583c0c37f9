"""A program's signing secrets: the current one, the previous one during a rotation's overlap.

The secret is HMAC(server key, "conversions:" + the program's signing seed) (tracker.signing).
Merchants sign conversions and events with it; refguard signs the program's webhooks with the
current one. A rotation gives the program a new random seed; for ROTATION_OVERLAP the previous
secret is still accepted on incoming signatures, so the merchant can deploy the new one without
a window of refused requests. Webhooks switch to the new secret at once: a receiver verifying
with either secret during its own deploy should accept both, as refguard does.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from tracker.programs.queries import Program
from tracker.signing import program_signing_secret

ROTATION_OVERLAP = timedelta(hours=24)
MAX_OVERLAP = timedelta(days=7)


def new_seed() -> str:
    """256 random bits: a fresh program's or a rotation's signing seed."""
    return secrets.token_hex(32)


def current_secret(secret_key: bytes, program: Program) -> str:
    return program_signing_secret(secret_key, program.signing_seed)


def accepted_secrets(secret_key: bytes, program: Program,
                     now: datetime | None = None) -> list[str]:
    """The secrets an incoming signature may use now: the current one, and the previous one
    until its overlap ends."""
    out = [current_secret(secret_key, program)]
    until = program.previous_signing_until
    now = datetime.now(UTC) if now is None else now
    if program.previous_signing_seed is not None and until is not None and now < until:
        out.append(program_signing_secret(secret_key, program.previous_signing_seed))
    return out
