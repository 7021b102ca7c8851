"""Masking secrets in text and in log events, without importing structlog.

:data:`redactor` is the one instance of the process: ``configure_logging``
registers the secrets in it and runs it last before rendering; the command line
passes its one-line errors through it. Apart from :mod:`doraforwarder.logging`
(which exports both under their old names) so the command line can do that
without loading the logging stack for ``--help``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

MASK = "***"
_SENSITIVE_KEYS = frozenset(
    {"authorization", "token", "access_token", "refresh_token", "password", "secret", "api_key"}
)
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',}]+", re.IGNORECASE)
_AUTHORIZATION = re.compile(r"(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?!bearer\s)[^\s\"',}]+",
                            re.IGNORECASE)


class SecretRedactor:
    """Replace secret values anywhere in an event dict with ``***``.

    Values are registered once at start (``GITHUB_TOKEN`` and friends); the
    processor walks nested dicts, lists and strings. Keys that by name hold a
    secret (``Authorization``, ``token``, ``password``) are masked whatever
    their value.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            if secret and len(secret) >= 4 and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret containing another is masked whole.
        self._secrets.sort(key=len, reverse=True)

    def redact_text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _BEARER.sub(rf"\g<1>{MASK}", text)
        return _AUTHORIZATION.sub(rf"\g<1>{MASK}", text)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, MutableMapping):
            return {
                key: MASK
                if isinstance(key, str) and key.lower() in _SENSITIVE_KEYS and value[key]
                else self.redact(value[key])
                for key in value
            }
        if isinstance(value, list | tuple | set):
            return [self.redact(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact_text(str(value))

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: self.redact(value) for key, value in event_dict.items()}


redactor = SecretRedactor()
"""The process-wide redactor; :func:`configure_logging` registers the secrets."""
