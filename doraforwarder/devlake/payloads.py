"""The DevLake webhook contract as pydantic models; nothing is sent that fails them.

Rules come from DevLake's webhook plugin (its deployment and issue endpoints):
required fields, environment and status enums, a non-empty commit list, dates
as ``2020-01-01T12:00:00+00:00`` in UTC, and ``startedDate <= finishedDate``.
Field contents for deployments follow the reference implementation, whose
``displayTitle`` format DevLake dashboards parse.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from doraforwarder.records import DetectedDeployment, Environment, ResolvedCommit, Result, utc

CommitRows = Literal["head", "range"]
"""``integration.devlake.deployment_commits``: how a deployment's commit rows are dated."""

DEVLAKE_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"


@functools.lru_cache(maxsize=4096)
def format_devlake_date(value: datetime) -> str:
    """``2020-01-01T12:00:00+00:00``: the one form every DevLake version parses.

    Cached: a deployment's commit rows repeat its two dates, and every body
    is serialised again at delivery (the contract check), so most calls are
    for a date just formatted.
    """
    return utc(value).strftime(DEVLAKE_DATE_FORMAT)


DevLakeDate = Annotated[datetime, AfterValidator(utc),
                        PlainSerializer(format_devlake_date, return_type=str)]
"""A date held in UTC (naive ones taken as UTC) and sent in DevLake's one safe form."""
NonEmpty = Annotated[str, Field(min_length=1)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def body(self) -> dict[str, Any]:
        """The JSON body to post: camelCase keys, absent optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DeploymentCommitPayload(Payload):
    repo_url: NonEmpty = Field(alias="repoUrl")
    commit_sha: NonEmpty = Field(alias="commitSha")
    started_date: DevLakeDate = Field(alias="startedDate")
    """``head`` rows: the deployment's start (DevLake credits a change to the row that
    started first); ``range`` rows: the commit's author date."""
    finished_date: DevLakeDate = Field(alias="finishedDate")
    """The deployment time: DevLake chains a repository's rows by it."""
    ref_name: str | None = Field(default=None, alias="refName")
    commit_msg: str | None = Field(default=None, alias="commitMsg")
    result: Result | None = None
    display_title: str | None = Field(default=None, alias="displayTitle")
    name: str | None = None
    created_date: DevLakeDate | None = Field(default=None, alias="createdDate")
    repo_id: str | None = Field(default=None, alias="repoId")


class DeploymentPayload(Payload):
    id: NonEmpty
    started_date: DevLakeDate = Field(alias="startedDate")
    finished_date: DevLakeDate = Field(alias="finishedDate")
    created_date: DevLakeDate | None = Field(default=None, alias="createdDate")
    environment: Environment = "PRODUCTION"
    result: Result = "SUCCESS"
    display_title: str | None = Field(default=None, alias="displayTitle")
    name: str | None = None
    original_environment: str | None = Field(default=None, alias="originalEnvironment")
    url: str | None = None
    deployment_commits: list[DeploymentCommitPayload] = Field(
        alias="deploymentCommits", min_length=1
    )

    @model_validator(mode="after")
    def _dates_in_order(self) -> DeploymentPayload:
        if self.started_date > self.finished_date:
            raise ValueError("startedDate is after finishedDate")
        return self


IssueStatus = Literal["TODO", "IN_PROGRESS", "DONE"]


class IssuePayload(Payload):
    issue_key: NonEmpty = Field(alias="issueKey")
    title: NonEmpty
    status: IssueStatus
    original_status: NonEmpty = Field(alias="originalStatus")
    created_date: DevLakeDate = Field(alias="createdDate")
    type: str | None = None
    resolution_date: DevLakeDate | None = Field(default=None, alias="resolutionDate")
    updated_date: DevLakeDate | None = Field(default=None, alias="updatedDate")
    url: str | None = None
    description: str | None = None
    severity: str | None = None
    component: str | None = None
    priority: str | None = None
    creator_id: str | None = Field(default=None, alias="creatorId")
    creator_name: str | None = Field(default=None, alias="creatorName")
    assignee_id: str | None = Field(default=None, alias="assigneeId")
    assignee_name: str | None = Field(default=None, alias="assigneeName")
    epic_key: str | None = Field(default=None, alias="epicKey")
    parent_issue_key: str | None = Field(default=None, alias="parentIssueKey")
    story_point: float | None = Field(default=None, alias="storyPoint")
    lead_time_minutes: int | None = Field(default=None, alias="leadTimeMinutes", ge=0)
    original_estimate_minutes: int | None = Field(default=None, alias="originalEstimateMinutes")
    time_spent_minutes: int | None = Field(default=None, alias="timeSpentMinutes")
    time_remaining_minutes: int | None = Field(default=None, alias="timeRemainingMinutes")

    @model_validator(mode="after")
    def _resolution_after_creation(self) -> IssuePayload:
        if self.resolution_date is not None and self.resolution_date < self.created_date:
            raise ValueError("resolutionDate is before createdDate")
        return self


def display_title(deployment: DetectedDeployment) -> str:
    """The reference's title, which DevLake dashboards parse: keep it byte for byte."""
    deployed = utc(deployment.deployed_at).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"ArgoCD Deployment | Component: {deployment.component} | Cluster: {deployment.cluster} "
        f"| Environment: {deployment.environment} | Revision: {deployment.revision} "
        f"| Status: {deployment.result} | Deployed: {deployed}"
    )


def deployment_name(deployment: DetectedDeployment) -> str:
    return (
        f"deploy {deployment.component} to {deployment.cluster} "
        f"({deployment.environment.lower()})"
    )


def row_started(deployment: DetectedDeployment, commit: ResolvedCommit,
                mode: CommitRows) -> datetime:
    """A commit row's ``startedDate``.

    ``head``: the deployment's own start, so that DevLake's "earliest started
    row" is the first deployment that shipped a change (a redeploy after a
    rollback starts later). ``range``: the commit's author date. Never after
    the finish: a commit authored "after" the deployment (clock skew) would
    give DevLake a negative span.
    """
    finished = deployment.deployed_at
    start = deployment.started_at if mode == "head" else commit.author_date
    return min(start, finished)


MAX_DEPLOYMENT_COMMITS = 65535 // 31
"""2114: the most commit rows DevLake can store for one deployment. It writes them in
one INSERT, MySQL takes at most 65535 placeholders and ``cicd_deployment_commits`` has
31 columns: 2115 rows answered 500 "Prepared statement contains too many placeholders"
on the real v1.0.3 and main 420e494b, and nothing was stored."""


def fit_commit_rows(commits: Sequence[ResolvedCommit],
                    limit: int = MAX_DEPLOYMENT_COMMITS) -> list[ResolvedCommit]:
    """At most ``limit`` of ``commits``, in their order: every repository's last (its head).

    A deployment with more rows than DevLake can store would be refused every
    time, and a refused deployment is missing from every DORA number; one
    that keeps its heads and its newest commits counts as deployed, keeps the
    lead time of what it shipped last, and loses only its oldest commits' rows
    (as ``github.max_commits`` already cuts a long range). Ranges are listed
    oldest first, so each repository's last row is the commit it deployed.
    """
    if len(commits) <= limit:
        return list(commits)
    heads = {commit.repo_url: index for index, commit in enumerate(commits)}
    kept = set(sorted(heads.values(), reverse=True)[:limit])
    others = sorted((index for index in range(len(commits)) if index not in kept),
                    key=lambda index: (commits[index].author_date, index), reverse=True)
    kept.update(others[:limit - len(kept)])
    return [commits[index] for index in sorted(kept)]


def _deployment_fields(
    deployment: DetectedDeployment, commits: Sequence[ResolvedCommit], mode: CommitRows
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Field values (python names) of the deployment and of its commit rows (at most
    :data:`MAX_DEPLOYMENT_COMMITS`, :func:`fit_commit_rows`)."""
    commits = fit_commit_rows(commits)
    title = display_title(deployment)
    name = deployment_name(deployment)
    finished = deployment.deployed_at
    rows = [
        {
            "repo_url": commit.repo_url,
            "commit_sha": commit.sha,
            "started_date": row_started(deployment, commit, mode),
            "finished_date": finished,
            "ref_name": commit.ref_name,
            "commit_msg": commit.message,
            "result": deployment.result,
            "display_title": title,
            "name": name,
        }
        for commit in commits
    ]
    fields: dict[str, Any] = {
        "id": deployment.id,
        "started_date": min(deployment.started_at, finished),
        "finished_date": finished,
        "created_date": min(deployment.started_at, finished),
        "environment": deployment.environment,
        "result": deployment.result,
        "display_title": title,
        "name": name,
        "original_environment": deployment.environment,
    }
    return fields, rows


def build_deployment_payload(
    deployment: DetectedDeployment, commits: Sequence[ResolvedCommit], mode: CommitRows = "head"
) -> DeploymentPayload:
    """The DevLake deployment for ``deployment`` shipping ``commits``.

    Raises :class:`pydantic.ValidationError` when the contract cannot be met
    (no commits, empty repository URL or SHA): the caller dead-letters such
    records, with :func:`unchecked_deployment_body` as the body to inspect.
    """
    fields, rows = _deployment_fields(deployment, commits, mode)
    return DeploymentPayload(
        **fields, deployment_commits=[DeploymentCommitPayload(**row) for row in rows]
    )


def unchecked_deployment_body(
    deployment: DetectedDeployment, commits: Sequence[ResolvedCommit], mode: CommitRows = "head"
) -> dict[str, Any]:
    """The body :func:`build_deployment_payload` would give, built without validation.

    Only for dead letters: an operator sees what was refused and why.
    """
    fields, rows = _deployment_fields(deployment, commits, mode)
    payload = DeploymentPayload.model_construct(
        **fields,
        deployment_commits=[DeploymentCommitPayload.model_construct(**row) for row in rows],
    )
    body: dict[str, Any] = payload.model_dump(
        mode="json", by_alias=True, exclude_none=True, warnings=False
    )
    return body


class ClosePayload(Payload):
    """The close call has no body: the issue key is in the URL."""


CONTRACT: dict[str, type[Payload]] = {
    "deployment": DeploymentPayload,
    "issue": IssuePayload,
    "close": ClosePayload,
}
"""The contract model of each outbox record kind."""


def contract_body(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Validate ``payload`` against the model of ``kind``; returns the body to post.

    Raises :class:`pydantic.ValidationError` (or :class:`KeyError` for an
    unknown kind): such a record is dead-lettered, never sent.
    """
    return CONTRACT[kind].model_validate(payload).body()
