"""The four DORA numbers, read with the SQL of DevLake's own DORA dashboard.

The SQL is not copied here: it is read at run time from the ``DORA.json``
of the DevLake version under test (``grafana/dashboards/DORA.json`` in its
repository or its Grafana image), so a new DevLake release is checked with
its own dashboard. Each headline panel ends in a ``SELECT`` that formats a
figure for humans (``"23.0(high)"``, rounded to a tenth of an hour); the
numbers we compare are one step earlier, in the panel's named common table
expressions (``_production_deployment_days``, ``_median_change_lead_time``,
``_change_failure_rate``, ``_median_mttr``, ``_median_recovery_time``). So a
panel's ``WITH`` clause is kept as it is and its final ``SELECT`` is replaced
by one that reads such an expression, after Grafana's macros are expanded the
way Grafana's MySQL data source expands them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.dora_scenario import Numbers


class DashboardError(Exception):
    """DORA.json does not hold what the suite reads (another dashboard, or a renamed step)."""


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Every ``(panel title, rawSql)`` of the dashboard, rows' nested panels included."""
    found: list[tuple[str, str]] = []

    def walk(panels: Iterable[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets") or []:
                sql = target.get("rawSql")
                if isinstance(sql, str) and sql.strip():
                    found.append((str(panel.get("title", "")), sql))
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    return found


def _skip_quoted(sql: str, i: int) -> int:
    quote = sql[i]
    i += 1
    while i < len(sql):
        if sql[i] == "\\":
            i += 2
            continue
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return i


def top_level_words(sql: str) -> list[tuple[int, str]]:
    """``(offset, lower-case word)`` of every word outside parentheses, quotes and comments."""
    words: list[tuple[int, str]] = []
    depth = 0
    i = 0
    while i < len(sql):
        char = sql[i]
        if sql.startswith("--", i) or char == "#":
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = len(sql) if end < 0 else end + 2
        elif char in "'\"`":
            i = _skip_quoted(sql, i)
        elif char == "(":
            depth += 1
            i += 1
        elif char == ")":
            depth -= 1
            i += 1
        elif char.isalpha() or char == "_":
            start = i
            while i < len(sql) and (sql[i].isalnum() or sql[i] in "_$"):
                i += 1
            if depth == 0:
                words.append((start, sql[start:i].lower()))
        else:
            i += 1
    return words


def with_clause(sql: str) -> str:
    """The ``WITH ...`` part of a panel's query: everything before its main ``SELECT``."""
    words = top_level_words(sql)
    if not words or words[0][1] != "with":
        raise DashboardError("panel query does not start with WITH")
    for offset, word in words[1:]:
        if word == "select":
            return sql[:offset]
    raise DashboardError("panel query has no main SELECT")


def defines(sql: str, name: str) -> bool:
    return re.search(rf"(?i)(?:\bwith|,)\s*{re.escape(name)}\s+as\s*\(", sql) is not None


def _balanced_argument(sql: str, open_paren: int) -> int:
    """Offset of the ``)`` closing the ``(`` at ``open_paren``."""
    depth = 0
    i = open_paren
    while i < len(sql):
        if sql[i] in "'\"`":
            i = _skip_quoted(sql, i)
            continue
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise DashboardError("unbalanced $__timeFilter(")


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def expand_macros(sql: str, *, projects: Iterable[str], time_from: datetime, time_to: datetime,
                  dora_report: str = "2023") -> str:
    """Grafana's expansion of the dashboard's variables and MySQL macros.

    ``$project`` / ``${project}`` -> the quoted, comma-separated names (a
    multi-value variable); ``$__timeFilter(x)`` -> ``x BETWEEN FROM_UNIXTIME(a)
    AND FROM_UNIXTIME(b)``; ``$__timeFrom()`` / ``$__timeTo()`` ->
    ``FROM_UNIXTIME(a)`` / ``FROM_UNIXTIME(b)`` (read in a UTC session, as
    Grafana's MySQL data source does); ``$dora_report`` -> the report year.
    Any other variable left is an error: the query would not mean what the
    dashboard shows.
    """
    start, end = int(time_from.timestamp()), int(time_to.timestamp())
    quoted = ",".join(_sql_string(name) for name in projects)
    out = re.sub(r"\$\{project(?::[a-z]+)?\}|\$project\b", lambda _: quoted, sql)
    out = re.sub(r"\$\{dora_report(?::[a-z]+)?\}|\$dora_report\b", dora_report, out)
    out = out.replace("$__timeFrom()", f"FROM_UNIXTIME({start})")
    out = out.replace("$__timeTo()", f"FROM_UNIXTIME({end})")
    while (index := out.find("$__timeFilter(")) >= 0:
        open_paren = index + len("$__timeFilter")
        close = _balanced_argument(out, open_paren)
        column = out[open_paren + 1:close]
        out = (out[:index] + f"({column} BETWEEN FROM_UNIXTIME({start}) AND FROM_UNIXTIME({end}))"
               + out[close + 1:])
    left = sorted(set(re.findall(r"\$\{?[A-Za-z_][A-Za-z_0-9]*", _without_literals(out))))
    if left:
        raise DashboardError(f"unexpanded Grafana variables in the dashboard SQL: {left}")
    return out


def _without_literals(sql: str) -> str:
    """The query with comments removed (a ``$`` in a comment is not a variable)."""
    return re.sub(r"--[^\n]*", "", sql)


@dataclass(frozen=True)
class Step:
    """One number: the common table expression holding it and what to select from it."""

    cte: str
    select: str


STEPS: dict[str, Step] = {
    "deployments": Step("_production_deployment_days",
                        "SELECT COUNT(*), COUNT(DISTINCT day) FROM _production_deployment_days"),
    "lead_time": Step("_median_change_lead_time",
                      "SELECT median_change_lead_time FROM _median_change_lead_time"),
    "change_failure_rate": Step("_change_failure_rate",
                                "SELECT change_failure_rate FROM _change_failure_rate"),
    "time_to_restore": Step("_median_mttr", "SELECT median_time_to_resolve FROM _median_mttr"),
    "recovery": Step("_median_recovery_time",
                     "SELECT median_recovery_time FROM _median_recovery_time"),
}


class Dashboard:
    """``Dashboard.load(path).queries(project, ...)``: the SQL that yields each number."""

    def __init__(self, dashboard: dict[str, Any]) -> None:
        self.panels = panel_queries(dashboard)
        self.sources: dict[str, tuple[str, str]] = {}
        for key, step in STEPS.items():
            candidates = [(title, sql) for title, sql in self.panels if defines(sql, step.cte)]
            if not candidates:
                raise DashboardError(f"no panel of this DORA.json defines {step.cte}")
            # the headline panel of that metric: not a monthly chart (they build a calendar of
            # months), and the shortest, not the overview that holds all four
            headline = [pair for pair in candidates
                        if not re.search(r"\bcalendar_months\b", pair[1])] or candidates
            self.sources[key] = min(headline, key=lambda pair: len(pair[1]))

    @classmethod
    def load(cls, path: Path) -> Dashboard:
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise DashboardError(f"cannot read the DORA dashboard {path}: {exc}") from exc

    def query(self, key: str, *, project: str, time_from: datetime, time_to: datetime,
              dora_report: str = "2023") -> str:
        _, sql = self.sources[key]
        step = STEPS[key]
        report = "2021" if key == "time_to_restore" else dora_report
        head = expand_macros(with_clause(sql), projects=[project], time_from=time_from,
                             time_to=time_to, dora_report=report)
        return head.rstrip() + "\n" + step.select

    def numbers(self, run: Callable[[str], tuple[Any, ...] | None], *, project: str,
                time_from: datetime, time_to: datetime) -> Numbers:
        """The project's numbers; ``run(sql)`` returns the first row of a query."""

        def one(key: str) -> tuple[Any, ...]:
            row = run(self.query(key, project=project, time_from=time_from, time_to=time_to))
            if row is None:
                raise DashboardError(f"{key}: the dashboard query returned no row")
            return row

        deployments, days = one("deployments")
        return Numbers(
            deployments=int(deployments),
            deployment_days=int(days),
            median_lead_time_minutes=_int(one("lead_time")[0]),
            change_failure_rate=_float(one("change_failure_rate")[0]),
            time_to_restore_minutes=_int(one("time_to_restore")[0]),
            failed_deployment_recovery_minutes=_int(one("recovery")[0]),
        )


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _float(value: object) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal | int | float) else float(str(value))
