"""Settings, read once from the environment (DESIGN section 4).

A bad value raises `SettingsError` whose message names the variable, so start-up can stop with one
clear line. The secret key never appears in `repr`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

PREFIX = "REFGUARD_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{PREFIX}{name}: must be between {lo} and {hi}, got {value}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    raw = env.get(PREFIX + name, "")
    nets: list[IPNetwork] = []
    for part in raw.replace(";", ",").split(","):
        item = part.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{PREFIX}{name}: {item!r} is not an IP address or CIDR") from None
    return tuple(nets)


# Clicks a flush takes at most (whole journal segments), and an import's batch: a batch's fixed
# costs (the probe's plan, the COPY's start, the commit) spread over more clicks. 20,000 against
# 5,000 in one run (bench.flush_stages, load average 23): PostgreSQL's CPU a click 10.0-10.5 ->
# 8.0-8.3 us for wrk's traffic, 11.5-11.8 -> 9.5 for browser-like traffic, the flusher's own no
# higher once the collector leaves a batch alone (collector.BATCH_COLLECTIONS).
FLUSH_MAX_CLICKS = 20_000


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    database_url: str | None
    secret_key: bytes = field(repr=False)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    geoip_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    public_url: str = ""
    journal_fsync_ms: int = 100
    flush_interval_ms: int = 100
    flush_max_clicks: int = FLUSH_MAX_CLICKS
    run_jobs: bool = True
    retention_days: int = 180  # raw IPs and user agents older than this are reduced; 0: never
    log_format: str = "json"  # the server's log lines: "json" (one object a line) or "text"
    # Webhook URLs may point at private, loopback or link-local addresses (tests, an internal
    # receiver); off, they are refused when set and again at every delivery.
    webhook_allow_private: bool = False
    # The owner's DSN for migrations (None: database_url); see tracker/db.py.
    migrate_database_url: str | None = field(default=None, repr=False)
    # A replica for the heavy reads: fraud scans, reports, model fits (None: the primary);
    # see tracker.db.Replica.
    read_database_url: str | None = field(default=None, repr=False)

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def base_url(self) -> str:
        """Public base URL of the redirect endpoint (links are `{base_url}/r/{code}`)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    def with_overrides(self, **changes: object) -> Self:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get(PREFIX + "DATA_DIR") or "./.refguard").resolve()
        database_url = _dsn(env, "DATABASE_URL")
        migrate_database_url = _dsn(env, "MIGRATE_DATABASE_URL")
        geoip_raw = env.get(PREFIX + "GEOIP_DIR") or None
        geoip_dir = Path(geoip_raw) if geoip_raw else None
        if geoip_dir is not None and not geoip_dir.is_dir():
            raise SettingsError(f"{PREFIX}GEOIP_DIR: {geoip_raw!r} is not a directory")
        public_url = env.get(PREFIX + "PUBLIC_URL", "")
        if public_url and not public_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"{PREFIX}PUBLIC_URL: expected an http(s):// URL, got {public_url!r}"
            )
        host = env.get(PREFIX + "HOST") or "127.0.0.1"
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            secret_key=_secret_key(env, data_dir),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
            geoip_dir=geoip_dir,
            host=host,
            port=_int(env, "PORT", 8080, 0, 65535),
            workers=_int(env, "WORKERS", 1, 1, 64),
            public_url=public_url,
            journal_fsync_ms=_int(env, "JOURNAL_FSYNC_MS", 100, 0, 60_000),
            flush_interval_ms=_int(env, "FLUSH_INTERVAL_MS", 100, 10, 60_000),
            flush_max_clicks=_int(env, "FLUSH_MAX_CLICKS", FLUSH_MAX_CLICKS, 100, 1_000_000),
            retention_days=_int(env, "RETENTION_DAYS", 180, 0, 36_500),
            log_format=_choice(env, "LOG_FORMAT", "json", ("json", "text")),
            migrate_database_url=migrate_database_url,
            read_database_url=_dsn(env, "READ_DATABASE_URL"),
            webhook_allow_private=_flag(env, "WEBHOOK_ALLOW_PRIVATE"),
        )


def _dsn(env: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL DSN, or None when unset. Only its scheme is shown on a bad value: a DSN
    may carry a password."""
    raw = env.get(PREFIX + name) or None
    if raw is not None and not raw.startswith(("postgres://", "postgresql://")):
        raise SettingsError(f"{PREFIX}{name}: expected a postgresql:// DSN, "
                            f"got {raw.partition(':')[0][:20]!r}...")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off variable: unset, empty or 0 is off, 1 is on; anything else stops start-up."""
    raw = env.get(PREFIX + name) or "0"
    if raw not in ("0", "1"):
        raise SettingsError(f"{PREFIX}{name}: expected 1 (on) or 0 (off), got {raw!r}")
    return raw == "1"


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(PREFIX + name) or default
    if value not in choices:
        raise SettingsError(f"{PREFIX}{name}: expected one of {', '.join(choices)}, "
                            f"got {value!r}")
    return value


def _secret_key(env: Mapping[str, str], data_dir: Path) -> bytes:
    raw = env.get(PREFIX + "SECRET_KEY")
    if raw:
        if len(raw) < 16:
            raise SettingsError(f"{PREFIX}SECRET_KEY: must be at least 16 characters")
        return raw.encode()
    path = data_dir / "secret_key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SettingsError(f"{PREFIX}DATA_DIR: cannot read {path}: {exc.strerror}") from None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        # O_EXCL: two processes starting at once agree on one key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    except OSError as exc:
        raise SettingsError(f"{PREFIX}DATA_DIR: cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
