"""Where benchmarks write their figures: bench/results/<name>-<UTC time>.json (gitignored)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

# The code a benchmark drives: each `refguard` command it starts imports these afresh.
ENGINE = ("attribution", "fraud", "geo", "growth", "migrations", "tracker")


def code_digest(root: Path = ROOT) -> str:
    """A digest of the engine's source files as they are on disk now. A benchmark that drives
    `refguard` commands one after another runs whatever the files hold when each starts: an
    edit during a long run gives later seeds other code than earlier ones, which reads as the
    same data getting different decisions. Compared before and after each seed."""
    h = hashlib.sha256()
    for path in sorted(f for d in ENGINE for f in (root / d).rglob("*")
                       if f.suffix in (".py", ".sql") and f.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def save(name: str, result: dict[str, Any]) -> Path:
    """Write one run's figures and say where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return out
