"""Field types and the base every section shares.

Go-style durations (``30s``, ``1h30m``) and quoted numbers are how the
reference's files are written; reading them here once keeps every section
accepting the same forms and printing them back the same way.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
)

from doraforwarder.errors import ConfigError as ConfigError  # its old home, still exported

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h``, ``1h30m``, ``30d`` or plain seconds.

    The reference uses Go duration strings; plain numbers are seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=float(value))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"unparseable duration {value!r}: use forms like 30s, 5m, 1h, 1h30m")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """Render a duration the way an operator writes it (``90s`` -> ``1m30s``)."""
    seconds = value.total_seconds()
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
"""A ``timedelta`` read from Go-style duration strings and printed back the same way."""


def _string_or_number(value: object) -> object:
    """The reference quotes ports and ids (``"8080"``, ``"1"``); accept numbers too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


StrOrInt = Annotated[str, BeforeValidator(_string_or_number)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
