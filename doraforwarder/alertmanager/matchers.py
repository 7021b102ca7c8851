"""Alertmanager's label matchers: ``=``, ``!=``, ``=~``, ``!~``, as Alertmanager reads them.

Regular expressions are anchored at both ends (Alertmanager matches
``^(?:regex)$``), a label an alert lacks is the empty string, and a value may
be double-quoted (``severity="critical"``, Alertmanager's own spelling).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from doraforwarder.config import ALERT_MATCHER


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        seen = labels.get(self.name, "")
        if self.op == "=":
            return seen == self.value
        if self.op == "!=":
            return seen != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(seen) is not None
        return found if self.op == "=~" else not found


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = json.loads(raw)
        except ValueError:
            return raw[1:-1]
        return value if isinstance(value, str) else raw[1:-1]
    return raw


def parse_matcher(text: str) -> Matcher:
    """One matcher (the configuration already checked its syntax); ValueError otherwise."""
    found = ALERT_MATCHER.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a matcher")
    op = found.group("op")
    value = _unquote(found.group("value"))
    pattern = re.compile(f"(?:{value})") if op in ("=~", "!~") else None
    return Matcher(found.group("name"), op, value, pattern)


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(text) for text in texts)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher accepts ``labels`` (no matcher: every alert)."""
    return all(matcher.matches(labels) for matcher in matchers)
