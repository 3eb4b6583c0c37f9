"""Settings from the environment and the command line's exit codes and one-line errors."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PgServer, create_database, drop_database
from tracker.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFGUARD_PORT", "eighty"),
        ("REFGUARD_PORT", "70000"),
        ("REFGUARD_WORKERS", "0"),
        ("REFGUARD_TRUSTED_PROXIES", "10.0.0.0/8, not-an-ip"),
        ("REFGUARD_DATABASE_URL", "mysql://x"),
        ("REFGUARD_GEOIP_DIR", "/does/not/exist"),
        ("REFGUARD_SECRET_KEY", "short"),
        ("REFGUARD_PUBLIC_URL", "ftp://x"),
        ("REFGUARD_RETENTION_DAYS", "-1"),
        ("REFGUARD_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path), name: value}
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_defaults_and_generated_secret(tmp_path: Path) -> None:
    settings = Settings.from_env({"REFGUARD_DATA_DIR": str(tmp_path / "d")})
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.database_url is None
    key_file = tmp_path / "d" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings.secret_key == key_file.read_bytes()
    assert Settings.from_env({"REFGUARD_DATA_DIR": str(tmp_path / "d")}).secret_key == \
        settings.secret_key
    assert settings.secret_key.decode() not in repr(settings)


def test_trusted_proxies_parse(tmp_path: Path) -> None:
    settings = Settings.from_env({"REFGUARD_DATA_DIR": str(tmp_path),
                                  "REFGUARD_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32,1.2.3.4"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32",
                                                          "1.2.3.4/32"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_bad_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run_cli("migrate", env={"REFGUARD_DATA_DIR": str(tmp_path), "REFGUARD_PORT": "x"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "REFGUARD_PORT" in result.stderr


def test_cli_unreachable_database_is_one_line_exit_1(tmp_path: Path) -> None:
    result = run_cli("migrate", env={"REFGUARD_DATA_DIR": str(tmp_path),
                                     "REFGUARD_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0


def test_cli_bad_usage_exit_2(tmp_path: Path) -> None:
    env = {"REFGUARD_DATA_DIR": str(tmp_path)}
    for args in (("frobnicate",), ("token", "create", "--role", "king", "--name", "x"),
                 ("serve", "--workers", "0"), ("fraud", "scan", "--no-such-flag")):
        result = run_cli(*args, env=env)
        assert result.returncode == 2 and result.stdout == "", args
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("refguard"), (
            result.stderr)


async def test_token_create_prints_a_working_token_once(pg: PgServer, tmp_path: Path) -> None:
    name = await create_database(pg)
    try:
        env = {"REFGUARD_DATA_DIR": str(tmp_path), "REFGUARD_DATABASE_URL": pg.uri(name)}
        result = run_cli("token", "create", "--role", "finance", "--name", "ops", env=env)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        assert token.startswith("rg_") and len(token) > 40
        import asyncpg

        from tracker.auth import hash_token

        conn = await asyncpg.connect(pg.uri(name))
        try:
            row = await conn.fetchrow("SELECT role, token_hash FROM api_tokens")
            assert row["role"] == "finance"
            assert row["token_hash"] == hash_token(token)
            assert token.encode() not in row["token_hash"]
            assert await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'token.create'") == 1
        finally:
            await conn.close()
    finally:
        await drop_database(pg, name)


def test_long_commands_show_that_they_are_at_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import time

    from tracker import cli

    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.05)
    out = io.StringIO()
    with cli._progress("fraud scan", out):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and all(x.startswith("fraud scan: working, ") for x in lines)
    quiet = io.StringIO()
    with cli._progress(None, quiet):
        time.sleep(0.1)
    assert quiet.getvalue() == ""
