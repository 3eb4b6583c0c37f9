"""bench.results.code_digest: a red team run notices the engine's files changing under it (an
edit during a long run gave later seeds other code, which read as the same data getting
different fraud decisions)."""

from pathlib import Path

from bench.results import code_digest


def test_an_edit_to_the_engine_changes_the_digest_and_an_edit_elsewhere_does_not(
        tmp_path: Path) -> None:
    signals = tmp_path / "fraud" / "signals.py"
    signals.parent.mkdir()
    signals.write_text("WEIGHT = 0.7\n")
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_init.sql").write_text("CREATE TABLE t (x int);\n")
    notes = tmp_path / "bench" / "notes.py"
    notes.parent.mkdir()
    notes.write_text("x = 1\n")
    before = code_digest(tmp_path)
    assert code_digest(tmp_path) == before  # the same files: the same digest
    notes.write_text("x = 2\n")  # the benchmark's own files are not the engine
    assert code_digest(tmp_path) == before
    signals.write_text("WEIGHT = 0.6999\n")
    edited = code_digest(tmp_path)
    assert edited != before
    (tmp_path / "fraud" / "pools.py").write_text("")  # a new module counts too
    assert code_digest(tmp_path) != edited
