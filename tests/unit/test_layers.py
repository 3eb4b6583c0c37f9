"""The dependency direction of DESIGN.md section 2 and of tracker/'s domains, checked on every
import statement (lazy imports inside functions included).

Libraries (geo/, fraud/, attribution/) never import tracker/, and fraud/ and attribution/ never
import each other. Inside tracker/ the direction is web -> finance -> scoring -> libraries;
clicks never imports scoring, finance or web; the small shared modules (settings, db, errors,
formats, ...) import no domain subpackage, so any domain may use them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = {"geo", "fraud", "attribution", "growth"}
FORBIDDEN = {
    "geo": {"tracker", "fraud", "attribution"},
    "fraud": {"tracker", "attribution"},
    "attribution": {"tracker", "fraud"},
    "growth": {"tracker", "fraud", "attribution"},
}

# tracker/'s top-level modules that every domain may use: they import no domain.
SHARED = {"__init__", "settings", "db", "auth", "metrics", "logs", "identity", "privacy", "audit",
          "signing", "formats", "errors", "listener", "collector"}
DOMAINS = {"web", "clicks", "intake", "programs", "scoring", "finance", "asks", "demo"}
# What each part of tracker/ may import besides the shared modules, itself and the libraries.
MAY_IMPORT: dict[str, set[str]] = {
    "clicks": set(),
    "programs": set(),
    "intake": {"clicks", "programs"},
    "scoring": {"programs", "intake"},
    "finance": {"scoring", "programs", "intake"},
    "asks": {"finance", "scoring", "programs", "intake", "clicks"},
    "web": {"clicks", "intake", "programs", "scoring", "finance", "asks", "jobs"},
    "demo": {"clicks", "intake", "programs", "scoring", "finance", "asks"},
    "jobs": {"clicks", "intake", "programs", "scoring", "finance", "asks"},
    "cli": DOMAINS | {"jobs"},
    "__main__": {"cli"},
}


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tracker":  # from tracker import metrics, web
                out.update(f"tracker.{alias.name}" for alias in node.names)
            else:
                out.add(node.module)
    return out


def imported_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


def part_of(module: str) -> str:
    """tracker.web.api.common -> web; tracker.settings -> settings."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def inner_violations(root: Path) -> list[str]:
    violations = []
    for path in sorted((root / "tracker").rglob("*.py")):
        rel = path.relative_to(root / "tracker")
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        allowed = SHARED | {part} | MAY_IMPORT.get(part, set())
        for name in sorted(imported_modules(path)):
            if name.split(".")[0] != "tracker" or name == "tracker":
                continue
            target = part_of(name)
            if target not in allowed:
                violations.append(f"tracker/{rel.as_posix()} imports {name}")
    return violations


def test_libraries_never_import_against_the_direction() -> None:
    violations = []
    checked = 0
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            checked += 1
            bad = imported_packages(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert checked >= 4
    assert set(FORBIDDEN) == LIBRARIES
    assert violations == []


def test_tracker_domains_import_only_along_the_direction() -> None:
    parts = {p.name for p in (ROOT / "tracker").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert parts <= DOMAINS, f"a new folder needs its place in MAY_IMPORT: {parts - DOMAINS}"
    assert inner_violations(ROOT) == []


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import tracker.app\nfrom fraud import bots\nfrom . import sibling\n")
    assert imported_packages(sample) == {"tracker", "fraud"}

    def place(rel: str, text: str) -> None:
        path = tmp_path / "tracker" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    place("formats.py", "from tracker.web import keys\n")  # a shared module reaching up
    place("clicks/flusher.py", "def f():\n    from tracker.scoring import risk\n")  # lazily
    place("scoring/risk.py", "from tracker import metrics\nfrom tracker.finance import ledger\n")
    place("finance/clearance.py", "from tracker.scoring.risk import scan\nimport tracker.web.app\n")
    place("web/app.py", "from tracker.finance import ledger\nfrom tracker.clicks import journal\n")
    assert inner_violations(tmp_path) == [
        "tracker/clicks/flusher.py imports tracker.scoring",
        "tracker/finance/clearance.py imports tracker.web.app",
        "tracker/formats.py imports tracker.web",
        "tracker/scoring/risk.py imports tracker.finance",
    ]
