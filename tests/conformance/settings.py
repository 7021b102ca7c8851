"""What the conformance suite needs from the user, read from the environment.

The suite runs only against a DevLake the user names; without it every test
of ``tests/conformance/`` that needs DevLake is skipped with one line saying
which variables to set (CI has none of them and stays green).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

URL = "DORAFORWARDER_CONFORMANCE_DEVLAKE_URL"
KEY = "DORAFORWARDER_CONFORMANCE_DEVLAKE_KEY"
DSN = "DORAFORWARDER_CONFORMANCE_DB_DSN"
DORA_JSON = "DORAFORWARDER_CONFORMANCE_DORA_JSON"
PREFIX = "DORAFORWARDER_CONFORMANCE_DEVLAKE_PREFIX"
REQUIRED = (URL, KEY, DSN, DORA_JSON)


@dataclass(frozen=True)
class Database:
    """Read-only access to DevLake's MySQL/MariaDB database (for the dashboard's SQL)."""

    host: str
    port: int
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class Conformance:
    url: str
    """DevLake's config-ui URL (prefix ``/api/rest``) or its backend (prefix ``/rest``)."""
    prefix: str
    key: str
    """An API key whose allowed path covers ``/projects``, ``/blueprints``, ``/pipelines``,
    ``/api-keys`` and ``/plugins/webhook/`` (``.*``): the suite sets up and removes its
    throwaway projects with it."""
    database: Database
    dora_json: Path


def parse_dsn(dsn: str) -> Database:
    """``mysql://user:password@host:port/database`` -> :class:`Database` (clear error otherwise)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"{DSN} must look like mysql://user:password@host:port/database")
    return Database(host=parts.hostname, port=parts.port or 3306,
                    user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                    database=parts.path.strip("/"))


def skip_reason(env: Mapping[str, str] | None = None) -> str | None:
    """The one line the suite is skipped with, or None when it can run."""
    env = os.environ if env is None else env
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        return ("DevLake conformance suite: set " + ", ".join(missing)
                + " to run it against your DevLake (see docs/devlake.md)")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        return ("DevLake conformance suite: needs PyMySQL "
                "(pip install -e '.[conformance]'; see docs/devlake.md)")
    return None


def load(env: Mapping[str, str] | None = None) -> Conformance:
    env = os.environ if env is None else env
    prefix = env.get(PREFIX) or "/api/rest"
    if prefix not in ("/api/rest", "/rest"):
        raise ValueError(f"{PREFIX} must be /api/rest (config-ui) or /rest (the backend)")
    return Conformance(url=env[URL].rstrip("/"), prefix=prefix, key=env[KEY],
                       database=parse_dsn(env[DSN]), dora_json=Path(env[DORA_JSON]))
