"""A four-day estate whose DORA dashboard numbers are known, played against a fake world.

Three components (``api`` and ``web`` of team-a, ``worker`` of team-b), two
clusters, one gitops repository. :func:`play` writes what ArgoCD, GitHub and
WebRCA would, :data:`TRUTH` is what DevLake's dashboard must show per project
once the forwarder has sent everything (``head`` rows).

Day 1 10:00 D1 api anchors its chain (gitops change, image unchanged).
Day 2 10:00 D2 api ships PR 1 (merged day 1 12:00); 10:05 the same revision
on prod-west is the same deployment (multi-cluster rollout).
Day 2 16:00 D3 web and 16:30 D4 worker deploy one gitops commit (anchors).
Day 3 12:00 D5 web ships PR 3; 13:00 worker fails to sync (FAILURE: not
counted); 14:00 D6 api ships PR 2; 15:00 D7 api rolls back to PR 1's image;
15:30-16:30 WebRCA incident (konflux: team-a) -> linked to D7.
Day 4 09:00 D8 api redeploys PR 2's image (PR 2 stays credited to D6);
10:00 D9 worker syncs and turns Degraded (failures_as_incidents: a SUCCESS
deployment, then an incident from 10:00:30 to 10:30:40).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.world import FakeWorld

CONNECTIONS = {1: "global", 2: "team-a", 3: "team-b"}
TEAMS: list[dict[str, Any]] = [
    {"name": "team-a", "project_id": "2", "argocd_components": ["api", "web"],
     "webrca_products": ["konflux"]},
    {"name": "team-b", "project_id": "3", "argocd_components": ["worker"]},
]
GITOPS = "https://github.com/org/gitops"
COMPONENTS = ("api", "web", "worker")


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def overrides(mode: str = "head") -> dict[str, Any]:
    return {
        "argocd": {"known_clusters": ["prod-east", "prod-west"], "failures_as_incidents": True,
                   "incident_after": "5m", "health_timeout": "30s"},
        "github": {"image_repositories": [
            {"prefix": f"quay.io/org/{c}", "repo": f"https://github.com/org/{c}"}
            for c in COMPONENTS]},
        "webrca": {"interval": "1s", "products": ["konflux"]},
        "integration": {"devlake": {"teams": TEAMS, "deployment_commits": mode}},
    }


@dataclass(frozen=True)
class Numbers:
    deployments: int
    deployment_days: int
    median_lead_time_minutes: int | None
    change_failure_rate: float | None
    time_to_restore_minutes: int | None
    failed_deployment_recovery_minutes: int | None


# PR 1: first commit 11:00, created 11:30, merged 12:00 (day 1), deployed day 2 10:00:
#   30 + 30 + 1320 = 1380. PR 2: created = first commit day 2 11:00, merged 12:00,
#   deployed day 3 14:00: 0 + 60 + 1560 = 1620. PR 3: day 3 08:00 -> 09:00, deployed
#   12:00: 0 + 60 + 180 = 240. Lower median of [240, 1380, 1620] = 1380.
# WebRCA incident: 60 min to restore, resolved 90 min after D7 finished.
# ArgoCD incident: 10:00:30 -> 10:30:40 (30 min), 30 min after D9 finished.
TRUTH = {
    "global": Numbers(9, 4, 1380, 2 / 9, 30, 30),
    "team-a": Numbers(7, 4, 1380, 1 / 7, 60, 90),
    "team-b": Numbers(2, 2, None, 1 / 2, 30, 30),
}
EXPECTED_DEPLOYMENTS = 10  # nine SUCCESS and one FAILURE, in the global connection
EXPECTED_ISSUES = 2


class Estate:
    """The applications and repositories of the scenario, in a fake world."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        for connection, name in CONNECTIONS.items():
            world.devlake.add_project(name, connections=[connection])
        github = world.github
        start = at(1, 0)
        self.g = github.add_repo("org/gitops", 12, start=start, step=timedelta(minutes=1))
        (self.c0,) = github.add_repo("org/api", 1, start=start)
        self.p1 = github.add_commit("org/api", message="pr1", parent=self.c0,
                                    author_date=at(1, 11))
        self.m1 = github.add_commit("org/api", message="merge pr1", parents=[self.c0, self.p1],
                                    author_date=at(1, 12))
        self.p2 = github.add_commit("org/api", message="pr2", parent=self.m1,
                                    author_date=at(2, 11))
        self.m2 = github.add_commit("org/api", message="merge pr2", parents=[self.m1, self.p2],
                                    author_date=at(2, 12))
        github.add_pull_request("org/api", 1, commits=[self.p1], merge_commit_sha=self.m1,
                                created_at=at(1, 11, 30), merged_at=at(1, 12))
        github.add_pull_request("org/api", 2, commits=[self.p2], merge_commit_sha=self.m2,
                                created_at=at(2, 11), merged_at=at(2, 12))
        (self.w0,) = github.add_repo("org/web", 1, start=start)
        self.p3 = github.add_commit("org/web", message="pr3", parent=self.w0,
                                    author_date=at(3, 8))
        self.m3 = github.add_commit("org/web", message="merge pr3", parents=[self.w0, self.p3],
                                    author_date=at(3, 9))
        github.add_pull_request("org/web", 3, commits=[self.p3], merge_commit_sha=self.m3,
                                created_at=at(3, 8), merged_at=at(3, 9))
        (self.k0,) = github.add_repo("org/worker", 1, start=start)
        self.apps: dict[str, LiveApp] = {}
        for component, image_sha in (("api", self.c0), ("web", self.w0), ("worker", self.k0)):
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

    def sync(self, app: str, when: datetime, gitops: int, image_sha: str | None = None,
             health: str = "Healthy") -> None:
        """A sync whose history entry says ``deployedAt == when``."""
        live = self.apps[app]
        live.now = when - timedelta(seconds=20)
        component = app.split("-", 1)[0]
        images = [self.image(component, image_sha)] if image_sha else None
        for step in live.sync(self.g[gitops], images, health=health, record_transition=True):
            self.world.kube.apply(step)

    def play(self) -> None:
        self.sync("api-prod-east", at(1, 10), 1)                          # D1
        self.sync("api-prod-east", at(2, 10), 2, self.m1)                 # D2: PR 1
        self.sync("api-prod-west", at(2, 10, 5), 2, self.m1)              # same deployment
        self.sync("web-prod-east", at(2, 16), 3)                          # D3
        self.sync("worker-prod-east", at(2, 16, 30), 3)                   # D4
        self.sync("web-prod-east", at(3, 12), 4, self.m3)                 # D5: PR 3
        worker = self.apps["worker-prod-east"]
        worker.now = at(3, 13)
        for step in worker.fail(self.g[5]):                               # FAILURE
            self.world.kube.apply(step)
        self.sync("api-prod-east", at(3, 14), 6, self.m2)                 # D6: PR 2
        self.sync("api-prod-east", at(3, 15), 7, self.m1)                 # D7: rollback
        self.world.webrca.add_incident(
            "ITN-1", products=["konflux"], status="resolved",
            created_at=iso(at(3, 15, 30)), resolved_at=iso(at(3, 16, 30)),
            last_changed_at=iso(at(3, 16, 30)))
        self.sync("api-prod-east", at(4, 9), 8, self.m2)                  # D8: redeploy
        self.sync("worker-prod-east", at(4, 10), 9, health="Degraded")    # D9 + incident

    def recover(self) -> None:
        """The worker is Healthy again: its incident resolves."""
        worker = self.apps["worker-prod-east"]
        worker.now = at(4, 10, 30, 30)
        self.world.kube.apply(worker.set_health("Healthy", record_transition=True))

    def delivered(self) -> bool:
        """Everything is in DevLake: the ten deployments and both incidents, resolved."""
        devlake = self.world.devlake
        issues = [devlake.issue(connection, key) for connection in (1, 2, 3)
                  for key in ("ITN-1", *self.argocd_issue_keys())]
        return (len(devlake.deployment_ids(1)) >= EXPECTED_DEPLOYMENTS
                and len(devlake.deployment_ids(2)) >= 7 and len(devlake.deployment_ids(3)) >= 3
                and sum(1 for issue in issues if issue and issue.get("resolutionDate")) == 4)

    def argocd_issue_keys(self) -> list[str]:
        return sorted({p.record_id or "" for p in self.world.devlake.accepted("issue")
                       if (p.record_id or "").startswith("argocd:")})
