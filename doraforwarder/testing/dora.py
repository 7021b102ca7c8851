"""DevLake's DORA computation, step by step, over what the fake DevLake stored.

DevLake computes the dashboard's numbers when a project's blueprint runs,
from its own tables; this model does the same from the fake DevLake's rows
and the fake GitHub's commit graph and pull requests, so tests can assert
the numbers users see instead of payloads:

1. deployment frequency: SUCCESS + PRODUCTION deployment-commit rows of the
   project's scopes grouped by deployment id; a deployment's day is the
   latest date of its rows' ``finished_date``;
2. chains: per (scope, repo_url, environment), SUCCESS rows ordered by
   ``finished_date``; each row's previous row is the one before it (ties
   are arbitrary in DevLake: here broken by row id and reported);
3. diffs from git: commits reachable from a row's sha but not from its
   previous row's sha;
4. attribution: a merged pull request whose merge commit is in a diff goes to
   the PRODUCTION row with the earliest ``started_date`` (then id); the first
   row of a chain credits nothing;
5. per-PR times rounded up to the minute (negative: none); cycle time is the
   sum of coding, created-to-merged and deploy times, a missing part adding 0;
6. incidents (INCIDENT issues on the project's boards) link to the latest
   SUCCESS PRODUCTION row of the project finished before the incident was
   created; the change failure rate counts deployments with a linked incident
   from any project (the dashboard joins by deployment id only), and so does
   the failed deployment recovery time: every project's resolved incident
   linked to one of this project's deployments (time to restore counts the
   project's own incidents only);
7. medians are the dashboard's: the largest value whose percent rank is at
   most 0.5.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import pairwise
from typing import Any

from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_devlake_bodies import parse_devlake_date
from doraforwarder.testing.fake_github import FakeGitHub, FakePullRequest


def lower_median(values: Iterable[int]) -> int | None:
    """The dashboard's median: the largest value whose ``percent_rank()`` is <= 0.5."""
    ordered = sorted(values)
    if not ordered:
        return None
    count = len(ordered)
    best = ordered[0]
    for value in ordered:
        rank = sum(1 for other in ordered if other < value)  # percent_rank ties share a rank
        if count == 1 or rank / (count - 1) <= 0.5:
            best = value
    return best


def ceil_minutes(start: datetime | None, end: datetime | None) -> int | None:
    """DevLake's ``computeTimeSpan``: minutes rounded up, None when unknown or negative."""
    if start is None or end is None:
        return None
    minutes = math.ceil((end - start).total_seconds() / 60)
    return None if minutes < 0 else minutes


def _trunc_minutes(start: datetime, end: datetime) -> int:
    """MySQL's ``TIMESTAMPDIFF(MINUTE, ...)`` and Go's ``uint(d.Minutes())``: truncated."""
    return int((end - start).total_seconds() / 60)


@dataclass(frozen=True)
class PullRequestTimes:
    """One credited pull request, with the minutes DevLake stores for it."""

    repo: str
    number: int
    deployment_id: str
    coding: int | None
    pickup: int | None
    review: int | None
    deploy: int | None
    cycle: int


@dataclass(frozen=True)
class IncidentLink:
    connection_id: int
    issue_key: str
    deployment_id: str | None
    time_to_restore: int | None
    recovery: int | None
    """Failed deployment recovery time: resolution minus the deployment's finish."""
    resolved: datetime | None = None


@dataclass
class ProjectNumbers:
    """What DevLake's DORA dashboard shows for one project (whole period)."""

    project: str
    deployments: int
    deployment_days: int
    days: list[date]
    lead_times_minutes: dict[str, int]
    """Cycle time per credited pull request, keyed ``repo#number``."""
    median_lead_time_minutes: int | None
    change_failure_rate: float | None
    incidents: int
    time_to_restore_minutes: int | None
    failed_deployment_recovery_minutes: int | None
    pull_requests: list[PullRequestTimes] = field(default_factory=list)
    incident_links: list[IncidentLink] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the demo."""
        def show(value: int | None) -> str:
            return "-" if value is None else f"{value} min"
        rate = "-" if self.change_failure_rate is None else f"{self.change_failure_rate:.0%}"
        return (f"{self.project}: {self.deployments} deployments on {self.deployment_days} "
                f"days, median lead time {show(self.median_lead_time_minutes)} "
                f"({len(self.lead_times_minutes)} PRs), change failure rate {rate} "
                f"({self.incidents} incidents), time to restore "
                f"{show(self.time_to_restore_minutes)}, failed deployment recovery "
                f"{show(self.failed_deployment_recovery_minutes)}")


def _is_prod_success(row: dict[str, Any]) -> bool:
    return bool(row["result"] == "SUCCESS" and row["environment"] == "PRODUCTION")


class DoraModel:
    """``DoraModel(devlake, github).project("name")``: the dashboard's numbers.

    ``repos`` maps a project to the GitHub repositories its own GitHub
    connection collects (default: every repository of the fake GitHub).
    """

    def __init__(self, devlake: FakeDevLake, github: FakeGitHub | None = None,
                 repos: dict[str, Sequence[str]] | None = None) -> None:
        self.devlake = devlake
        self.github = github
        self.repos = repos or {}

    # --- inputs -----------------------------------------------------------------------------

    def _rows(self, project: str) -> list[dict[str, Any]]:
        rows = self.devlake.commit_rows(self.devlake.project_connections(project))
        return [row for row in rows if row["finished_date"] is not None]

    def _incidents(self, project: str) -> list[tuple[int, dict[str, Any]]]:
        return [(connection, issue) for connection, issue
                in self.devlake.issue_rows(self.devlake.project_connections(project))
                if issue.get("type") == "INCIDENT"]

    # --- steps ------------------------------------------------------------------------------

    @staticmethod
    def deployment_days(rows: Iterable[dict[str, Any]]) -> dict[str, date]:
        """Deployment id -> its day (latest finished date of its SUCCESS PRODUCTION rows)."""
        days: dict[str, date] = {}
        for row in rows:
            if _is_prod_success(row):
                day = row["finished_date"].date()
                days[row["cicd_deployment_id"]] = max(days.get(row["cicd_deployment_id"], day),
                                                      day)
        return days

    @staticmethod
    def chains(rows: Iterable[dict[str, Any]], warnings: list[str]
               ) -> dict[str, dict[str, Any] | None]:
        """Row id -> its previous row in its (scope, repo, environment) chain."""
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["result"] == "SUCCESS" and row["environment"] and row["repo_url"]:
                groups[(row["cicd_scope_id"], row["repo_url"], row["environment"])].append(row)
        previous: dict[str, dict[str, Any] | None] = {}
        for key, members in sorted(groups.items()):
            members.sort(key=lambda r: (r["finished_date"], r["id"]))
            for before, after in pairwise(members):
                if before["finished_date"] == after["finished_date"]:
                    warnings.append(
                        f"rows {before['id']} and {after['id']} of {key[1]} ({key[2]}) finish "
                        f"at the same time: DevLake orders them arbitrarily")
            for index, row in enumerate(members):
                previous[row["id"]] = members[index - 1] if index else None
        return previous

    def _ancestry(self, graph: dict[str, list[str]], sha: str) -> set[str]:
        seen: set[str] = set()
        todo = [sha]
        while todo:
            current = todo.pop()
            if current in seen or current not in graph:
                continue
            seen.add(current)
            todo.extend(graph[current])
        return seen

    def diffs(self, rows: Iterable[dict[str, Any]], previous: dict[str, dict[str, Any] | None],
              graph: dict[str, list[str]], warnings: list[str]) -> dict[str, set[str]]:
        """Row id -> commits it shipped (refdiff's ``commits_diffs``), for rows with a previous."""
        shipped: dict[str, set[str]] = {}
        for row in rows:
            before = previous.get(row["id"])
            if before is None:
                continue
            if row["commit_sha"] not in graph or before["commit_sha"] not in graph:
                warnings.append(f"row {row['id']}: {row['commit_sha'][:12]} or "
                                f"{before['commit_sha'][:12]} is not in the git graph: no diff")
                shipped[row["id"]] = set()
                continue
            shipped[row["id"]] = (self._ancestry(graph, row["commit_sha"])
                                  - self._ancestry(graph, before["commit_sha"]))
        return shipped

    @staticmethod
    def credit(rows: Iterable[dict[str, Any]], shipped: dict[str, set[str]]
               ) -> dict[str, dict[str, Any]]:
        """Commit sha -> the PRODUCTION SUCCESS row with a previous row, earliest started."""
        best: dict[str, dict[str, Any]] = {}
        for row in rows:
            if not _is_prod_success(row) or row["id"] not in shipped:
                continue
            for sha in shipped[row["id"]]:
                held = best.get(sha)
                if held is None or (row["started_date"], row["id"]) < (held["started_date"],
                                                                       held["id"]):
                    best[sha] = row
        return best

    @staticmethod
    def pull_request_times(pull: FakePullRequest, row: dict[str, Any]) -> PullRequestTimes:
        coding = ceil_minutes(pull.first_commit_at, pull.created_at)
        pickup = ceil_minutes(pull.created_at, pull.first_review_at)
        review = ceil_minutes(pull.first_review_at, pull.merged_at)
        deploy = ceil_minutes(pull.merged_at, row["finished_date"])
        created_to_merged = ceil_minutes(pull.created_at, pull.merged_at)
        cycle = (coding or 0) + (created_to_merged or 0) + (deploy or 0)
        return PullRequestTimes(pull.repo, pull.number, row["cicd_deployment_id"], coding,
                                pickup, review, deploy, cycle)

    @staticmethod
    def finished_of(rows: Iterable[dict[str, Any]]) -> dict[str, datetime]:
        """Deployment id -> the latest finish of its SUCCESS PRODUCTION rows (``_deployments``)."""
        finished: dict[str, datetime] = {}
        for row in rows:
            if _is_prod_success(row):
                held = finished.get(row["cicd_deployment_id"])
                finished[row["cicd_deployment_id"]] = max(held or row["finished_date"],
                                                          row["finished_date"])
        return finished

    def incident_links(self, project: str, warnings: list[str]) -> list[IncidentLink]:
        """Each incident of the project linked to the latest earlier SUCCESS PRODUCTION row."""
        rows = [r for r in self._rows(project) if _is_prod_success(r)]
        finished_of = self.finished_of(rows)
        links = []
        for connection, issue in sorted(self._incidents(project),
                                        key=lambda pair: (pair[0], pair[1]["issueKey"])):
            created = parse_devlake_date(issue.get("createdDate"))
            resolved = parse_devlake_date(issue.get("resolutionDate"))
            deployment_id = None
            if created is not None:
                before = [r for r in rows if r["finished_date"] < created]
                if before:
                    latest = max(r["finished_date"] for r in before)
                    tied = sorted({r["cicd_deployment_id"] for r in before
                                   if r["finished_date"] == latest})
                    if len(tied) > 1:
                        warnings.append(f"incident {issue['issueKey']}: deployments {tied} "
                                        "finish at the same time: DevLake links one arbitrarily")
                    deployment_id = tied[-1]
            restore: int | None = None
            sent = issue.get("leadTimeMinutes")
            if isinstance(sent, int) and sent > 0:
                restore = sent
            elif created is not None and resolved is not None:
                if resolved < created:
                    warnings.append(f"incident {issue['issueKey']} resolved before it was "
                                    "created: DevLake stores a garbage lead time")
                else:
                    restore = _trunc_minutes(created, resolved)
            recovery = None
            if resolved is not None and deployment_id is not None:
                recovery = _trunc_minutes(finished_of[deployment_id], resolved)
            if resolved is None:
                restore = None  # the dashboard filters on resolution_date
            links.append(IncidentLink(connection, issue["issueKey"], deployment_id, restore,
                                      recovery, resolved))
        return links

    # --- the numbers ------------------------------------------------------------------------

    def project(self, name: str) -> ProjectNumbers:
        warnings: list[str] = []
        rows = self._rows(name)
        days = self.deployment_days(rows)
        previous = self.chains(rows, warnings)
        repos = self.repos.get(name)
        graph = self.github.parents_of(repos) if self.github is not None else {}
        shipped = self.diffs(rows, previous, graph, warnings)
        credited = self.credit(rows, shipped)
        pulls = self.github.pull_requests(repos) if self.github is not None else []
        times = [self.pull_request_times(pull, credited[pull.merge_commit_sha])
                 for pull in pulls
                 if pull.merged_at is not None and pull.merge_commit_sha in credited]
        links = self.incident_links(name, warnings)
        every_link = [link for project in self.devlake.project_names()
                      for link in (links if project == name
                                   else self.incident_links(project, []))]
        linked_anywhere = {link.deployment_id for link in every_link
                           if link.deployment_id is not None}
        with_incident = sum(1 for deployment_id in days if deployment_id in linked_anywhere)
        finished = self.finished_of(rows)
        recoveries = [_trunc_minutes(finished[link.deployment_id], link.resolved)
                      for link in every_link
                      if link.deployment_id in finished and link.resolved is not None]
        return ProjectNumbers(
            project=name,
            deployments=len(days),
            deployment_days=len(set(days.values())),
            days=sorted(set(days.values())),
            lead_times_minutes={f"{t.repo}#{t.number}": t.cycle for t in times},
            median_lead_time_minutes=lower_median(t.cycle for t in times),
            change_failure_rate=with_incident / len(days) if days else None,
            incidents=len(links),
            time_to_restore_minutes=lower_median(
                link.time_to_restore for link in links if link.time_to_restore is not None),
            failed_deployment_recovery_minutes=lower_median(recoveries),
            pull_requests=times,
            incident_links=links,
            warnings=warnings,
        )

    def summary(self) -> str:
        """Every project's line, for the demo."""
        return "\n".join(self.project(name).summary() for name in self.devlake.project_names())
