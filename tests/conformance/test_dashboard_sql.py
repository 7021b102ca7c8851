"""How the conformance suite reads DORA.json and when it skips: pure logic, runs in CI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conformance import settings
from tests.conformance.dashboard import (
    Dashboard,
    DashboardError,
    expand_macros,
    top_level_words,
    with_clause,
)

T0 = datetime(2025, 2, 1, tzinfo=UTC)
T1 = datetime(2025, 3, 1, tzinfo=UTC)
ALL_SET = {settings.URL: "http://127.0.0.1:4000", settings.KEY: "k",
           settings.DSN: "mysql://reader:pw@127.0.0.1:3306/lake",
           settings.DORA_JSON: "/tmp/DORA.json"}


def test_skip_line_names_every_missing_variable() -> None:
    reason = settings.skip_reason({})
    assert reason is not None and "\n" not in reason
    for name in settings.REQUIRED:
        assert name in reason
    partly = settings.skip_reason({settings.URL: "http://x"})
    assert partly is not None and settings.URL not in partly and settings.KEY in partly


def test_runs_when_everything_is_named() -> None:
    pytest.importorskip("pymysql")
    assert settings.skip_reason(ALL_SET) is None
    loaded = settings.load({**ALL_SET, settings.PREFIX: "/rest"})
    assert loaded.prefix == "/rest" and loaded.database.port == 3306
    assert settings.load(ALL_SET).prefix == "/api/rest"


@pytest.mark.parametrize("dsn, error", [
    ("mysql://reader:p%40ss@db:3307/lake", None),
    ("postgres://reader@db/lake", "mysql://user:password@host:port/database"),
    ("mysql://reader@db", "mysql://user:password@host:port/database"),
])
def test_dsn(dsn: str, error: str | None) -> None:
    if error is None:
        db = settings.parse_dsn(dsn)
        assert (db.host, db.port, db.user, db.password, db.database) == (
            "db", 3307, "reader", "p@ss", "lake")
    else:
        with pytest.raises(ValueError, match=error):
            settings.parse_dsn(dsn)


def test_prefix_must_be_one_devlake_has() -> None:
    with pytest.raises(ValueError, match="/api/rest"):
        settings.load({**ALL_SET, settings.PREFIX: "/api"})


def test_with_clause_stops_at_the_main_select_only() -> None:
    sql = ("-- select in a comment\nwith _a as (select 1 as x), _b as (\n"
           "  select 'select' as y from (select 2) t)\nSELECT x FROM _a")
    assert with_clause(sql).rstrip().endswith("select 2) t)")
    assert [w for _, w in top_level_words(sql)] == ["with", "_a", "as", "_b", "as", "select",
                                                    "x", "from", "_a"]
    with pytest.raises(DashboardError):
        with_clause("select 1")


def test_macros_expand_as_grafana_does() -> None:
    sql = ("where pm.project_name in (${project}) and $__timeFilter(max(cdc.finished_date))\n"
           "and x > $__timeFrom() and ('$dora_report') = '2023' and p in ($project)")
    out = expand_macros(sql, projects=["it's"], time_from=T0, time_to=T1)
    start, end = int(T0.timestamp()), int(T1.timestamp())
    assert out == (
        "where pm.project_name in ('it''s') and (max(cdc.finished_date) BETWEEN "
        f"FROM_UNIXTIME({start}) AND FROM_UNIXTIME({end}))\n"
        f"and x > FROM_UNIXTIME({start}) and ('2023') = '2023' and p in ('it''s')")
    with pytest.raises(DashboardError, match=r"\$interval"):
        expand_macros("select $interval", projects=["p"], time_from=T0, time_to=T1)


def _panel(title: str, sql: str) -> dict[str, object]:
    return {"title": title, "targets": [{"rawSql": sql}]}


def test_each_number_comes_from_its_headline_panel() -> None:
    headline = "with _median_change_lead_time as (select 5 as median_change_lead_time)\nselect 1"
    monthly = ("with calendar_months as (select 1), _median_change_lead_time as (select 1)\n"
               "select 2")
    overview = ("with _production_deployment_days as (select 1 as day), _median_change_lead_time"
                " as (select 1), _change_failure_rate as (select 1), _median_mttr as (select 1),"
                " _median_recovery_time as (select 1), a_much_longer_overview_of_everything as "
                "(select 1)\nselect 3")
    dashboard = Dashboard({"panels": [
        _panel("overview", overview),
        {"type": "row", "panels": [_panel("lead time", headline), _panel("monthly", monthly)]},
    ]})
    assert dashboard.sources["lead_time"][0] == "lead time"
    assert dashboard.sources["deployments"][0] == "overview"
    query = dashboard.query("lead_time", project="p", time_from=T0, time_to=T1)
    assert query.endswith("\nSELECT median_change_lead_time FROM _median_change_lead_time")
    assert "select 1\n" not in query
    with pytest.raises(DashboardError, match="_production_deployment_days"):
        Dashboard({"panels": [_panel("lead time", headline)]})
