"""What the fake DevLake stores and records: API keys, projects, the requests it answered.

The ids are built the way DevLake builds them (a connection's key, a
deployment-commit row id), so assertions and the DORA model see real ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiKey:
    """An API key as DevLake stores it: the regex of paths it may call."""

    key: str
    allowed_path: str
    expired: bool = False
    connection_id: int | None = None
    """The webhook connection it was created with, if any."""


@dataclass
class Project:
    """A DevLake project; it holds connections through its blueprint."""

    name: str
    blueprint: bool = True
    connection_ids: list[int] = field(default_factory=list)


def connection_key_value(connection_id: int) -> str:
    """The (fake) key DevLake returns when a webhook connection is created."""
    return f"devlake-connection-{connection_id}-key"


def deployment_commit_row_id(connection_id: int, deployment_id: str, repo_url: str,
                             sha: str) -> str:
    """DevLake's ``GenerateDeploymentCommitId``."""
    digest = hashlib.md5(repo_url.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"webhook:{connection_id}:{deployment_id}:{digest}:{sha}"


@dataclass(frozen=True)
class Posted:
    """One request the fake answered (kept for assertions)."""

    method: str
    path: str
    kind: str
    """deployment, issue, close, connection, connections, other."""
    connection_id: int | None
    record_id: str | None
    status: int
    body: Any
    authorization: str | None
    at: float
