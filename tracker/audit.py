"""The audit log: who did what to which object, when and why. Append-only for the application's
role (a trigger refuses UPDATE and DELETE); every decision on money writes a row here in the
same transaction as the change."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def record(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    program_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO audit_log
               (program_id, actor, action, object_type, object_id, reason, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        program_id, actor, action, object_type, object_id, reason, json.dumps(details or {}),
    )
