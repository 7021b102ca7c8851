"""A six-day estate, three teams, four components on two clusters, checked on DevLake.

Played through the real daemon into the real DevLake (v1.0.3 and main 420e494b, built from
its repository, its DORA dashboard SQL read on MariaDB), the model and DevLake agree on every
number of every project, and :data:`TRUTH` is what each project's own deployments and
incidents give. It is the scenario that found DevLake's cross-project join: the change
failure rate panel joins incident links to deployments by id without the project, so while
one deployment had one id in every connection, team-c's ITN-2 (linked to the ui deployment
D11) marked the global copy of D11 failed too, and global's ITN-2 (linked to D12, api)
marked team-a's D12: global 5/13 and team-a 3/9. Since each team target gets its own
deployment id (``devlake/target_ids.py``: ``target_deployment_id``), DevLake shows 4/13 and 2/9.

Day 1 08:00-09:00 ITN-0 (ui) before any deployment. 10:00 D1 api anchor (prod-east; prod-west
10:05 same revision). 11:00 D2 ui anchor (prod-west 11:10 same).
Day 2 10:00 D3 api PR1 (both clusters); 16:00 D4 web anchor; 16:30 D5 worker anchor.
Day 3 12:00 D6 web PR3; 13:00 worker FAILURE; 14:00 D7 api PR2; 15:00 D8 api rollback to PR1;
15:30-16:30 ITN-1 (konflux: team-a).
Day 4 09:00 D9 api redeploys PR2; 10:00 D10 worker PR5 turns Degraded (incident ~30 min).
Day 5 10:00 D11 ui PR6 (prod-east; prod-west 10:20 same); 11:00 D12 api PR8 (two commits);
12:00-14:00 ITN-2 (ui: team-c).
Day 6 10:00 D13 web ships PR4 and PR7; 16:00 ITN-3 (konflux) opens, never resolved.
PR9 (api) is merged on day 6 and never deployed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from doraforwarder.testing.argocd_objects import LiveApp, source
from doraforwarder.testing.world import FakeWorld
from tests.dora_scenario import Numbers

CONNECTIONS = {1: "global", 2: "team-a", 3: "team-b", 4: "team-c"}
TEAMS: list[dict[str, Any]] = [
    {"name": "team-a", "project_id": "2", "argocd_components": ["api", "web"],
     "webrca_products": ["konflux"]},
    {"name": "team-b", "project_id": "3", "argocd_components": ["worker"]},
    {"name": "team-c", "project_id": "4", "argocd_components": ["ui"],
     "webrca_products": ["ui"]},
]
GITOPS = "https://github.com/org/gitops"
COMPONENTS = ("api", "web", "worker", "ui")


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 2, day, hour, minute, second, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def overrides() -> dict[str, Any]:
    return {
        "argocd": {"known_clusters": ["prod-east", "prod-west"], "failures_as_incidents": True,
                   "incident_after": "5m", "health_timeout": "30s"},
        "github": {"image_repositories": [
            {"prefix": f"quay.io/org/{c}", "repo": f"https://github.com/org/{c}"}
            for c in COMPONENTS]},
        "webrca": {"interval": "1s", "products": ["konflux", "ui"]},
        "integration": {"devlake": {"teams": TEAMS, "deployment_commits": "head"}},
    }


# Lead times (min): PR1 1380, PR2 1620, PR8 180, PR3 240, PR4 1260, PR7 1140, PR5 1500,
# PR6 1320; PR9 never deployed. Restore: ITN-0 60, ITN-1 60, ArgoCD 30, ITN-2 120 (ITN-3
# open). Recovery: ITN-1 90 after D8, ArgoCD 30 after D10, ITN-2 180 after D12 (global) and
# 240 after D11 (team-c).
TRUTH = {
    "global": Numbers(13, 6, 1260, 4 / 13, 60, 90),
    "team-a": Numbers(9, 6, 1140, 2 / 9, 60, 90),
    "team-b": Numbers(2, 2, 1500, 1 / 2, 30, 30),
    "team-c": Numbers(2, 2, 1320, 1 / 2, 60, 240),
}
SHARED_ID_CHANGE_FAILURE_RATE = {"global": 5 / 13, "team-a": 3 / 9}
"""What DevLake showed while team targets got the global target's deployment ids."""


class LongEstate:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        for connection, name in CONNECTIONS.items():
            world.devlake.add_project(name, connections=[connection])
        gh = world.github
        start = at(1, 0)
        self.g = gh.add_repo("org/gitops", 20, start=start, step=timedelta(minutes=1))

        def pr(repo: str, number: int, parent: str, commits: list[datetime], created: datetime,
               merged: datetime) -> str:
            shas = []
            prev = parent
            for i, when in enumerate(commits):
                prev = gh.add_commit(repo, message=f"pr{number} {i}", parent=prev, author_date=when)
                shas.append(prev)
            merge = gh.add_commit(repo, message=f"merge pr{number}", parents=[parent, shas[-1]],
                                  author_date=merged)
            gh.add_pull_request(repo, number, commits=shas, merge_commit_sha=merge,
                                created_at=created, merged_at=merged)
            return merge

        (self.c0,) = gh.add_repo("org/api", 1, start=start)
        self.m1 = pr("org/api", 1, self.c0, [at(1, 11)], at(1, 11, 30), at(1, 12))
        self.m2 = pr("org/api", 2, self.m1, [at(2, 11)], at(2, 11), at(2, 12))
        self.m8 = pr("org/api", 8, self.m2, [at(5, 8), at(5, 9)], at(5, 9, 30), at(5, 10))
        self.m9 = pr("org/api", 9, self.m8, [at(6, 10)], at(6, 10), at(6, 11))
        (self.w0,) = gh.add_repo("org/web", 1, start=start)
        self.m3 = pr("org/web", 3, self.w0, [at(3, 8)], at(3, 8), at(3, 9))
        self.m4 = pr("org/web", 4, self.m3, [at(5, 13)], at(5, 13, 10), at(5, 14))
        self.m7 = pr("org/web", 7, self.m4, [at(5, 15)], at(5, 15), at(5, 16))
        (self.k0,) = gh.add_repo("org/worker", 1, start=start)
        self.m5 = pr("org/worker", 5, self.k0, [at(3, 9)], at(3, 9), at(3, 10))
        (self.u0,) = gh.add_repo("org/ui", 1, start=start)
        self.m6 = pr("org/ui", 6, self.u0, [at(4, 12)], at(4, 12), at(4, 13))
        self.apps: dict[str, LiveApp] = {}
        for component, image_sha, clusters in (("api", self.c0, ("prod-east", "prod-west")),
                                               ("web", self.w0, ("prod-east",)),
                                               ("worker", self.k0, ("prod-east",)),
                                               ("ui", self.u0, ("prod-east", "prod-west"))):
            for cluster in clusters:
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
        live = self.apps[app]
        live.now = when - timedelta(seconds=20)
        component = app.split("-", 1)[0]
        images = [self.image(component, image_sha)] if image_sha else None
        for step in live.sync(self.g[gitops], images, health=health, record_transition=True):
            self.world.kube.apply(step)

    def incident(self, key: str, product: str, created: datetime,
                 resolved: datetime | None) -> None:
        fields: dict[str, Any] = {"created_at": iso(created)}
        if resolved is not None:
            fields.update(status="resolved", resolved_at=iso(resolved),
                          last_changed_at=iso(resolved))
        else:
            fields.update(status="investigating", last_changed_at=iso(created))
        self.world.webrca.add_incident(key, products=[product], **fields)

    def fail(self, app: str, when: datetime, gitops: int) -> None:
        live = self.apps[app]
        live.now = when
        for step in live.fail(self.g[gitops]):
            self.world.kube.apply(step)

    def recover(self) -> None:
        """The Degraded worker is Healthy again: its incident resolves."""
        worker = self.apps["worker-prod-east"]
        worker.now = at(4, 10, 30, 30)
        self.world.kube.apply(worker.set_health("Healthy", record_transition=True))

    def script(self) -> list[Step]:
        """The scenario in order; a step waits for DevLake to hold ``after`` deployments of
        the global connection (a second cluster's sync after the first one's deployment)."""
        s = self.sync
        return [
            Step(lambda: self.incident("ITN-0", "ui", at(1, 8), at(1, 9))),
            Step(lambda: s("api-prod-east", at(1, 10), 1)),                        # D1
            Step(lambda: s("api-prod-west", at(1, 10, 5), 1), after=1),            # same
            Step(lambda: s("ui-prod-east", at(1, 11), 2)),                         # D2
            Step(lambda: s("ui-prod-west", at(1, 11, 10), 2), after=2),            # same
            Step(lambda: s("api-prod-east", at(2, 10), 3, self.m1)),               # D3: PR1
            Step(lambda: s("api-prod-west", at(2, 10, 5), 3, self.m1), after=3),   # same
            Step(lambda: s("web-prod-east", at(2, 16), 4)),                        # D4
            Step(lambda: s("worker-prod-east", at(2, 16, 30), 4)),                 # D5
            Step(lambda: s("web-prod-east", at(3, 12), 5, self.m3)),               # D6: PR3
            Step(lambda: self.fail("worker-prod-east", at(3, 13), 6)),             # FAILURE
            Step(lambda: s("api-prod-east", at(3, 14), 7, self.m2)),               # D7: PR2
            Step(lambda: s("api-prod-east", at(3, 15), 8, self.m1), after=8),      # D8: back
            Step(lambda: self.incident("ITN-1", "konflux", at(3, 15, 30), at(3, 16, 30)),
                 after=9),
            Step(lambda: s("api-prod-east", at(4, 9), 9, self.m2)),                # D9: again
            Step(lambda: s("worker-prod-east", at(4, 10), 10, self.m5,             # D10 +
                           health="Degraded")),                                    # incident
            Step(self.recover, incident=True),
            Step(lambda: s("ui-prod-east", at(5, 10), 11, self.m6)),               # D11: PR6
            Step(lambda: s("ui-prod-west", at(5, 10, 20), 11, self.m6), after=12),  # same
            Step(lambda: s("api-prod-east", at(5, 11), 12, self.m8)),              # D12: PR8
            Step(lambda: self.incident("ITN-2", "ui", at(5, 12), at(5, 14))),
            Step(lambda: s("web-prod-east", at(6, 10), 13, self.m7)),              # D13
            Step(lambda: self.incident("ITN-3", "konflux", at(6, 16), None)),
        ]

    def delivered(self) -> bool:
        """Every deployment in each connection, every incident in its final state."""
        devlake = self.world.devlake
        wanted = {1: 14, 2: 9, 3: 3, 4: 2}  # with the worker's FAILURE in 1 and 3
        resolved = {1: 4, 2: 1, 3: 1, 4: 2}
        for connection, count in wanted.items():
            if len(devlake.deployment_ids(connection)) < count:
                return False
            issues = [issue for c, issue in devlake.issue_rows([connection])]
            if sum(1 for issue in issues if issue.get("resolutionDate")) < resolved[connection]:
                return False
        return all(devlake.issue(c, "ITN-3") is not None for c in (1, 2))


@dataclass(frozen=True)
class Step:
    action: Callable[[], object]
    after: int = 0
    """Deployments the global connection must hold before this step plays."""
    incident: bool = False
    """Wait for the ArgoCD incident of the Degraded worker first."""
