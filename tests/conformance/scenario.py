"""The conformance scenario: three days, two components, three DevLake projects, known numbers.

One project per target kind the configuration supports: the global target
by connection id (``project_id``), team-a by connection name
(``connection_name``), team-b by project name (``project_name``, DevLake
creates the connection ``<project>_deployments``). Every name, SHA and so
every deployment id carries the run's tag, so runs against one DevLake never
meet (refdiff keeps computed commit pairs across projects, keyed by SHA).

Day 1 10:00 D1 api anchors its chain (gitops change, image unchanged);
11:00 D2 worker anchors. PR 1 (api): first commit and creation 12:00,
merged 13:00.
Day 2 10:00 D3 api ships PR 1 on prod-east; 10:05 the same revision on
prod-west is the same deployment. 14:00 worker fails to sync (FAILURE: not
counted). PR 2 (api): first commit and creation 15:00, merged 16:00.
Day 3 09:00 D4 api ships PR 2; 10:00 D5 worker syncs and turns Degraded
(an incident from 10:00:30 to 10:30:40); WebRCA incident (konflux: team-a)
11:00 -> 12:00.

PRs reach DevLake through the webhook plugin's ``pull_requests`` route (no
PR commits there), so each PR's first commit is its creation: coding time 0
for the model and for DevLake alike. Without a GitHub connection DevLake has
no commit graph; refdiff then credits each deployment with its own deployed
commit, which is the PR's merge commit in every deployment here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.fake_github import FakeGitHub
from doraforwarder.testing.world import FakeWorld
from tests.dora_scenario import Numbers

GITOPS = "https://github.com/org/gitops"
START = datetime(2025, 2, 3, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return START + timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Names:
    """The throwaway DevLake objects of one run."""

    tag: str

    @property
    def global_project(self) -> str:
        return f"dfc-{self.tag}-global"

    @property
    def team_a_project(self) -> str:
        return f"dfc-{self.tag}-team-a"

    @property
    def team_b_project(self) -> str:
        return f"dfc-{self.tag}-team-b"

    @property
    def global_connection(self) -> str:
        return f"dfc-{self.tag}-global"

    @property
    def team_a_connection(self) -> str:
        return f"dfc-{self.tag}-team-a"

    @property
    def team_b_connection(self) -> str:
        """What DevLake's project route names the connection it creates."""
        return f"{self.team_b_project}_deployments"


# PR 1: 0 + 60 (created -> merged) + 1260 (merged day 1 13:00 -> D3 day 2 10:00) = 1320.
# PR 2: 0 + 60 + 1020 (merged day 2 16:00 -> D4 day 3 09:00) = 1080. Lower median: 1080.
# Global: D1..D5 (the FAILURE does not count) on days 1, 2, 3. Both incidents follow D5
# (worker, day 3 10:00): the worker's 30 min, WebRCA's 60 min to restore; recovery from
# D5's finish: 30 and 120. Team-a links WebRCA's incident to its own copy of D4 (its latest
# deployment), which is team-a's alone (a team target's copy is ``<id>@<team>``), so the
# global project counts D5 failed only: 1 of 5 (with one id in every connection DevLake's
# cross-project join made it 2 of 5). Recovery reads the links to a project's own
# deployments: global [30, 120] -> 30, team-a [180], team-b [30].
TRUTH = {
    "global": Numbers(5, 3, 1080, 1 / 5, 30, 30),
    "team-a": Numbers(3, 3, 1080, 1 / 3, 60, 180),
    "team-b": Numbers(2, 2, None, 1 / 2, 30, 30),
}


def overrides(names: Names, connection_id: int, prefix: str) -> dict[str, Any]:
    """The daemon's configuration: the three target kinds, head mode, fake world timings."""
    return {
        "argocd": {"known_clusters": ["prod-east", "prod-west"], "failures_as_incidents": True,
                   "incident_after": "5m", "health_timeout": "30s"},
        "github": {"image_repositories": [
            {"prefix": f"quay.io/org/{c}", "repo": f"https://github.com/org/{c}"}
            for c in ("api", "worker")]},
        "webrca": {"interval": "1s", "products": ["konflux"]},
        "integration": {"devlake": {
            "api_prefix": prefix, "project_id": str(connection_id),
            "deployment_commits": "head", "timeout_seconds": 30,
            "teams": [
                {"name": "team-a", "connection_name": names.team_a_connection,
                 "argocd_components": ["api"], "webrca_products": ["konflux"]},
                {"name": "team-b", "project_name": names.team_b_project,
                 "argocd_components": ["worker"]},
            ]}},
    }


class Scenario:
    """The applications, repositories and pull requests of one run, in a fake world."""

    def __init__(self, world: FakeWorld, tag: str) -> None:
        self.world = world
        self.tag = tag
        github: FakeGitHub = world.github
        self.g = github.add_repo("org/gitops", [f"{tag} gitops {i}" for i in range(8)],
                                 start=at(1, 0), step=timedelta(minutes=1))
        (self.c0,) = github.add_repo("org/api", [f"{tag} api base"], start=at(1, 0))
        self.p1 = github.add_commit("org/api", message=f"{tag} pr1", parent=self.c0,
                                    author_date=at(1, 12))
        self.m1 = github.add_commit("org/api", message=f"{tag} merge pr1",
                                    parents=[self.c0, self.p1], author_date=at(1, 13))
        self.p2 = github.add_commit("org/api", message=f"{tag} pr2", parent=self.m1,
                                    author_date=at(2, 15))
        self.m2 = github.add_commit("org/api", message=f"{tag} merge pr2",
                                    parents=[self.m1, self.p2], author_date=at(2, 16))
        github.add_pull_request("org/api", 1, f"{tag} pr1", commits=[self.p1],
                                merge_commit_sha=self.m1, created_at=at(1, 12),
                                merged_at=at(1, 13))
        github.add_pull_request("org/api", 2, f"{tag} pr2", commits=[self.p2],
                                merge_commit_sha=self.m2, created_at=at(2, 15),
                                merged_at=at(2, 16))
        (self.k0,) = github.add_repo("org/worker", [f"{tag} worker base"], start=at(1, 0))
        self.apps: dict[str, LiveApp] = {}
        for component, image_sha in (("api", self.c0), ("worker", self.k0)):
            for cluster in ("prod-east", "prod-west") if component == "api" else ("prod-east",):
                name = f"{component}-{cluster}"
                app = LiveApp(name, revision=self.g[0], images=[self.image(component, image_sha)],
                              start=at(1, 8), step=timedelta(seconds=10),
                              sources=[source(f"components/{component}/production", GITOPS)])
                self.apps[name] = app
                world.kube.apply(app.snapshot())

    @staticmethod
    def image(component: str, sha: str) -> str:
        return f"quay.io/org/{component}:{sha}"

    def pull_requests(self) -> list[dict[str, Any]]:
        """The PRs as the webhook plugin's ``pull_requests`` route takes them."""
        return [
            {"id": f"{self.tag}-pr-{pull.number}", "displayTitle": pull.title,
             "pullRequestKey": pull.number, "status": "MERGED", "originalStatus": "closed",
             "url": f"https://github.com/org/api/pull/{pull.number}",
             "createdDate": iso(pull.created_at), "mergedDate": iso(pull.merged_at),
             "mergeCommitSha": pull.merge_commit_sha, "baseRef": "main",
             "headRef": f"pr-{pull.number}"}
            for pull in self.world.github.pull_requests(["org/api"])
            if pull.merged_at is not None
        ]

    def sync(self, app: str, when: datetime, gitops: int, image_sha: str | None = None,
             health: str = "Healthy") -> None:
        live = self.apps[app]
        live.now = when - timedelta(seconds=20)
        component = app.split("-", 1)[0]
        images = [self.image(component, image_sha)] if image_sha else None
        for step in live.sync(self.g[gitops], images, health=health, record_transition=True):
            self.world.kube.apply(step)

    def play(self) -> None:
        self.sync("api-prod-east", at(1, 10), 1)                       # D1
        self.sync("worker-prod-east", at(1, 11), 2)                    # D2
        self.sync("api-prod-east", at(2, 10), 3, self.m1)              # D3: PR 1
        self.sync("api-prod-west", at(2, 10, 5), 3, self.m1)           # same deployment
        worker = self.apps["worker-prod-east"]
        worker.now = at(2, 14)
        for step in worker.fail(self.g[4]):                            # FAILURE
            self.world.kube.apply(step)
        self.sync("api-prod-east", at(3, 9), 5, self.m2)               # D4: PR 2
        self.sync("worker-prod-east", at(3, 10), 6, health="Degraded")  # D5 + incident
        self.world.webrca.add_incident(
            f"ITN-{self.tag}", products=["konflux"], status="resolved",
            created_at=iso(at(3, 11)), resolved_at=iso(at(3, 12)),
            last_changed_at=iso(at(3, 12)))

    def recover(self) -> None:
        """The worker is Healthy again: its incident resolves."""
        worker = self.apps["worker-prod-east"]
        worker.now = at(3, 10, 30, 30)
        self.world.kube.apply(worker.set_health("Healthy", record_transition=True))

    def argocd_issue_keys(self) -> list[str]:
        return sorted({p.record_id or "" for p in self.world.devlake.accepted("issue")
                       if (p.record_id or "").startswith("argocd:")})

    def delivered(self, connections: dict[str, int]) -> bool:
        """Everything reached the fake side of the tee (so the real one was asked too)."""
        devlake = self.world.devlake
        team_b = devlake.connection_id(Names(self.tag).team_b_connection)
        keys = (f"ITN-{self.tag}", *self.argocd_issue_keys())
        resolved = sum(1 for connection in (connections["global"], connections["team-a"], team_b)
                       if connection is not None
                       for key in keys
                       if (issue := devlake.issue(connection, key)) and issue.get("resolutionDate"))
        return (len(devlake.deployment_ids(connections["global"])) >= 6
                and len(devlake.deployment_ids(connections["team-a"])) >= 3
                and team_b is not None and len(devlake.deployment_ids(team_b)) >= 3
                and resolved == 4)
