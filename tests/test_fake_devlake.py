"""The strict fake DevLake: route table, both doors, key scopes, escaping, storage."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_devlake_bodies import parse_devlake_date
from doraforwarder.testing.fake_devlake_routing import backend_view, go_escape, through_config_ui
from tests.devlake_support import deployment_payload, issue_payload

GLOBAL_KEY = "global-key"
WIDE_KEY = "wide-key"
EXPIRED_KEY = "expired-key"
OTHER_KEY = "other-connection-key"


@pytest.fixture
def devlake() -> Iterator[FakeDevLake]:
    with FakeDevLake(token=GLOBAL_KEY, connections={1: "global", 6: "team",
                                                     7: "a b:c"}) as fake:
        fake.add_api_key(WIDE_KEY, ".*")
        fake.add_api_key(EXPIRED_KEY, ".*", expired=True)
        fake.add_project("P")
        fake.add_project("NoBlueprint", blueprint=False)
        fake.attach("P", 6)
        yield fake


def call(fake: FakeDevLake, method: str, raw_path: str, body: Any = None,
         key: str | None = None, header: str | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request with the exact raw path given (no client-side escaping)."""
    connection = http.client.HTTPConnection("127.0.0.1", fake.server.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    elif key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, str) else (None if body is None else json.dumps(body))
    try:
        connection.request(method, raw_path, body=data, headers=headers)
        answer = connection.getresponse()
        text = answer.read().decode()
        try:
            parsed: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return answer.status, parsed, dict(answer.headers)
    finally:
        connection.close()


ROUTE_KINDS = {
    "deployments": ("connections/6/deployments", deployment_payload("d1")),
    "issues": ("connections/6/issues", issue_payload("K-1")),
    "by-name deployments": ("connections/by-name/team/deployments", deployment_payload("d1")),
    "by-name issues": ("connections/by-name/team/issues", issue_payload("K-1")),
    "project deployments": ("projects/P/deployments", deployment_payload("d1")),
}
OWN_KEY_COVERS = {"deployments", "issues"}


def _key(fake: FakeDevLake, which: str) -> tuple[str | None, str | None]:
    return {
        "global": (GLOBAL_KEY, None), "wide": (WIDE_KEY, None),
        "own": (fake.connection_key(6), None), "other": (fake.connection_key(1), None),
        "expired": (EXPIRED_KEY, None), "invalid": ("nope", None),
        "missing": (None, None), "malformed": (None, "bearer x"),
    }[which]


EXPECTED = {
    "global": (200, None), "wide": (200, None),
    "other": (403, "path doesn't match api key's scope"),
    "expired": (403, "api key has expired"), "invalid": (403, "api key is invalid"),
    "missing": (401, "token is missing"), "malformed": (401, "token is not present or malformed"),
}


def _create_project_connection(devlake: FakeDevLake, kind: str) -> None:
    """The project route's first call creates ``P_deployments`` and answers 404."""
    if kind == "project deployments":
        assert call(devlake, "POST", "/plugins/webhook/projects/P/deployments",
                    deployment_payload("d0"))[0] == 404


@pytest.mark.parametrize("prefix", ["/rest", "/api/rest"])
@pytest.mark.parametrize("which", ["global", "wide", "own", "other", "expired", "invalid",
                                   "missing", "malformed"])
@pytest.mark.parametrize("kind", list(ROUTE_KINDS))
def test_every_route_with_every_key(devlake: FakeDevLake, prefix: str, which: str,
                                    kind: str) -> None:
    route, body = ROUTE_KINDS[kind]
    _create_project_connection(devlake, kind)
    key, header = _key(devlake, which)
    status, answer, _ = call(devlake, "POST", f"{prefix}/plugins/webhook/{route}", body,
                             key=key, header=header)
    if which == "own":
        expected = (200, None) if kind in OWN_KEY_COVERS else (
            403, "path doesn't match api key's scope")
    else:
        expected = EXPECTED[which]
    assert status == expected[0]
    if expected[1] is not None:
        assert answer == {"success": False, "message": expected[1]}
    else:
        assert answer == {"success": True, "message": "success"}


@pytest.mark.parametrize("prefix", ["", "/api"])
@pytest.mark.parametrize("kind", list(ROUTE_KINDS))
def test_no_key_check_outside_rest(devlake: FakeDevLake, prefix: str, kind: str) -> None:
    route, body = ROUTE_KINDS[kind]
    _create_project_connection(devlake, kind)
    assert call(devlake, "POST", f"{prefix}/plugins/webhook/{route}", body)[0] == 200


@pytest.mark.parametrize("path", ["/api/rest/projects/P/deployments", "/rest/projects/P/deployments",
                                  "/api/plugins/webhook/connections/99/deployments"])
def test_routes_that_do_not_exist(devlake: FakeDevLake, path: str) -> None:
    status, answer, _ = call(devlake, "POST", path, deployment_payload("d"), key=WIDE_KEY)
    assert status == 404
    assert answer in ("404 page not found", {"success": False, "message": "record not found (404)",
                                             "causes": None, "data": None})


def test_close_and_upsert(devlake: FakeDevLake) -> None:
    base = "/rest/plugins/webhook/connections/6"
    key = devlake.connection_key(6)
    status, answer, _ = call(devlake, "POST", f"{base}/issue/K-1/close", None, key=key)
    assert (status, answer["message"]) == (404, "issue not found (404)")
    assert call(devlake, "POST", f"{base}/issues", issue_payload("K-1"), key=key)[0] == 200
    assert call(devlake, "POST", f"{base}/issues", issue_payload("K-1", "DONE"), key=key)[0] == 200
    assert call(devlake, "POST", f"{base}/issue/K-1/close", None, key=key)[0] == 200
    issue = devlake.issue(6, "K-1")
    assert issue is not None and issue["status"] == "DONE" and issue["closed"]
    assert len(devlake.issues) == 1


def test_close_sets_no_resolution_date(devlake: FakeDevLake) -> None:
    base = "/plugins/webhook/connections/by-name/team"
    call(devlake, "POST", f"{base}/issues", issue_payload("K-2"))
    call(devlake, "POST", f"{base}/issue/K-2/close")
    issue = devlake.issue(6, "K-2")
    assert issue is not None and issue["status"] == "DONE" and "resolutionDate" not in issue


def test_project_route_creates_its_connection_before_validating(devlake: FakeDevLake) -> None:
    """v1.0.3 (seen on the real server): the call that creates ``P_deployments`` and
    attaches it answers 404 ``record not found`` and stores nothing, whatever its body."""
    path = "/rest/plugins/webhook/projects/P/deployments"
    status, answer, _ = call(devlake, "POST", path, deployment_payload("d0"), key=GLOBAL_KEY)
    assert status == 404 and answer["message"] == "record not found (404)"
    status, _, _ = call(devlake, "POST", path, {}, key=GLOBAL_KEY)
    assert status == 400  # the body is refused ...
    created = devlake.project_connection("P")  # ... after the connection was created
    assert created is not None and devlake.connections[created] == "P_deployments"
    assert created in devlake.project_connections("P")
    with pytest.raises(KeyError):
        devlake.connection_key(created)  # no key of its own
    assert call(devlake, "POST", path, deployment_payload("d1"), key=GLOBAL_KEY)[0] == 200
    assert devlake.project_connection("P") == created
    assert devlake.deployment_ids(created) == {"d1"}
    by_name = "/rest/plugins/webhook/connections/by-name/P_deployments/issues"
    assert call(devlake, "POST", by_name, issue_payload("I"), key=GLOBAL_KEY)[0] == 200


def test_project_route_creation_races(devlake: FakeDevLake) -> None:
    """Not atomic in DevLake: requests that looked the connection up while another created
    it try to create it too: 400 ``the connection name already exists`` (v1.0.3)."""
    path = "/rest/plugins/webhook/projects/P/deployments"
    devlake.hold()
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(call, devlake, "POST", path, deployment_payload(f"d{n}"),
                             key=GLOBAL_KEY) for n in range(3)]
        devlake.wait_for_held(3)
        devlake.release()
        answers = sorted((c.result()[0], c.result()[1]["message"]) for c in calls)
    assert answers == [(400, "the connection name already exists (400)"),
                       (400, "the connection name already exists (400)"),
                       (404, "record not found (404)")]
    assert call(devlake, "POST", path, deployment_payload("d0"), key=GLOBAL_KEY)[0] == 200


@pytest.mark.parametrize(("project", "status", "message"), [
    ("Q", 404, "could not find project [Q] in DB (404)"),
    ("NoBlueprint", 400, "project has no blueprint: NoBlueprint (400)"),
])
def test_project_route_refusals(devlake: FakeDevLake, project: str, status: int,
                                message: str) -> None:
    answer = call(devlake, "POST", f"/rest/plugins/webhook/projects/{project}/deployments",
                  deployment_payload("d"), key=GLOBAL_KEY)
    assert answer[0] == status and answer[1]["message"] == message


def test_project_route_name_taken_by_an_unattached_connection(devlake: FakeDevLake) -> None:
    devlake.add_connection(20, "P_deployments")
    answer = call(devlake, "POST", "/plugins/webhook/projects/P/deployments",
                  deployment_payload("d"))
    assert answer[0] == 400 and "the connection name already exists" in answer[1]["message"]


@pytest.mark.parametrize(("method", "status"), [("GET", 301), ("POST", 307)])
def test_trailing_slash_redirect_drops_rest(devlake: FakeDevLake, method: str,
                                            status: int) -> None:
    own = devlake.connection_key(6)
    answer = call(devlake, method, "/rest/plugins/webhook/connections/6/", None, key=own)
    assert answer[0] == status
    assert answer[2]["Location"] == "/plugins/webhook/connections/6"
    refused = call(devlake, "GET", "/rest/plugins/webhook/connections/6", key=own)
    assert refused[0] == 403  # the connection's own key never GETs it through /rest


def test_get_connections(devlake: FakeDevLake) -> None:
    status, answer, _ = call(devlake, "GET", "/rest/plugins/webhook/connections/6", key=GLOBAL_KEY)
    assert (status, answer) == (200, {"id": 6, "name": "team"})
    status, listing, _ = call(devlake, "GET", "/api/rest/plugins/webhook/connections",
                              key=GLOBAL_KEY)
    assert status == 200 and [c["id"] for c in listing] == [1, 6, 7]


@pytest.mark.parametrize(("body", "status"), [("[1, 2]", 500), ("not json", 500), ('"x"', 500)])
def test_body_not_an_object_is_500(devlake: FakeDevLake, body: str, status: int) -> None:
    assert call(devlake, "POST", "/plugins/webhook/connections/6/deployments", body)[0] == status


@pytest.mark.parametrize(("change", "bare", "text"), [
    ({"deploymentCommits": []}, False, "deployment_commits is empty (400)"),
    ({"environment": "production"}, False, "environment"),
    ({"startedDate": "nope"}, True, "startedDate"),
    ({"finishedDate": "2024-05-01T12:00:00.123456+00:00"}, True, "finishedDate"),
    ({"id": ""}, False, "id is required"),
])
def test_deployment_refusals(devlake: FakeDevLake, change: dict[str, Any], bare: bool,
                             text: str) -> None:
    status, answer, _ = call(devlake, "POST", "/plugins/webhook/connections/6/deployments",
                             deployment_payload("d") | change)
    assert status == 400
    if bare:
        assert isinstance(answer, str) and text in answer
    else:
        assert answer["success"] is False and text in answer["message"]


@pytest.mark.parametrize(("raw", "status"), [
    ("/rest/plugins/webhook/connections/by-name/a%20b:c/issues", 200),   # Go's own escaping
    ("/rest/plugins/webhook/connections/by-name/a%20b%3Ac/issues", 404),  # escaped ':'
    ("/rest/plugins/webhook/connections/by-name/a%20b%3ac/issues", 404),
    ("/api/rest/plugins/webhook/connections/by-name/a%20b%3Ac/issues", 200),  # nginx re-escapes
    ("/api/plugins/webhook/connections/by-name/a+b:c/issues", 404),  # '+' is a space here...
    ("/api/plugins/webhook/connections/by-name/a%20b%3Ac/issues", 200),  # raw routing
])
def test_escaping(devlake: FakeDevLake, raw: str, status: int) -> None:
    assert call(devlake, "POST", raw, issue_payload("K"), key=WIDE_KEY)[0] == status


def test_names_with_parentheses_or_slashes(devlake: FakeDevLake) -> None:
    devlake.add_connection(8, "x(1)")
    devlake.add_connection(9, "a/b")
    by_name = "/plugins/webhook/connections/by-name/{}/issues"
    assert call(devlake, "POST", "/rest" + by_name.format("x%281%29"), issue_payload("K"),
                key=WIDE_KEY)[0] == 200
    assert call(devlake, "POST", "/api/rest" + by_name.format("x%281%29"), issue_payload("K"),
                key=WIDE_KEY)[0] == 404  # nginx leaves ( ) raw, Go wanted them escaped
    assert call(devlake, "POST", "/rest" + by_name.format("a%2Fb"), issue_payload("K"),
                key=WIDE_KEY)[0] == 404
    assert call(devlake, "POST", "/api/rest" + by_name.format("a%2Fb"), issue_payload("K"),
                key=WIDE_KEY)[0] == 404
    assert call(devlake, "POST", "/api" + by_name.format("a%2Fb"), issue_payload("K"))[0] == 200


def test_path_helpers() -> None:
    assert go_escape("a b:c,(x)/é") == "a%20b:c,%28x%29/%C3%A9"
    assert backend_view("/x/a%20b") == ("/x/a b", None)
    assert backend_view("/x/a%3Ab") == ("/x/a:b", "/x/a%3Ab")
    assert through_config_ui("/api/rest/x/a%28b") == "/rest/x/a(b"
    assert through_config_ui("/api/x/a%28b") == "/x/a%28b"
    assert through_config_ui("/rest/x") is None
    # nginx normalizes before its rewrite on /api/rest/ (seen on nginx 1.22), not on /api/
    assert through_config_ui("/api/rest/x//1/../2/./y") == "/rest/x/2/y"
    assert through_config_ui("/api/rest/x/%2E%2E/y/..") == "/rest/"
    assert through_config_ui("/api/x//1/../2") == "/x//1/../2"


def test_normalized_paths_and_public_routes_as_real_config_ui(devlake: FakeDevLake) -> None:
    """Raw paths sent to config-ui's real nginx in front of DevLake v1.0.3 and to the fake."""
    path = "/plugins/webhook/connections/{}/deployments"
    assert call(devlake, "POST", "/api/rest" + path.format("1/../6"), {}, key=WIDE_KEY)[0] == 400
    assert call(devlake, "POST", "/api/rest" + path.format("/6"), {}, key=WIDE_KEY)[0] == 400
    assert call(devlake, "POST", "/api" + path.format("1/../6"), {})[0] == 404
    assert call(devlake, "POST", "/api/rest/../../../x", {})[0] == 400  # above the root
    assert call(devlake, "GET", "/api/rest/version", key=WIDE_KEY)[1] == {
        "version": devlake.version}
    assert call(devlake, "GET", "/api/rest/version", key=GLOBAL_KEY)[0] == 403  # out of scope
    assert call(devlake, "GET", "/api/rest/ping")[0] == 401
    assert call(devlake, "GET", "/api/ping")[0] == 200
    assert call(devlake, "GET", "/ping")[0] == 200


def test_storage_as_devlake_keeps_it(devlake: FakeDevLake) -> None:
    body = deployment_payload("shared") | {"result": "FAILURE"}
    call(devlake, "POST", "/plugins/webhook/connections/1/deployments", body)
    call(devlake, "POST", "/plugins/webhook/connections/6/deployments",
         body | {"environment": "STAGING"})
    assert list(devlake.cicd_deployments) == ["shared"]  # one row per raw id
    assert devlake.cicd_deployments["shared"]["cicd_scope_id"] == "webhook:6"  # last poster
    rows = devlake.commit_rows()
    assert len(rows) == 2
    assert {r["result"] for r in rows} == {"SUCCESS"}  # rows' own result, not the deployment's
    assert {r["cicd_scope_id"]: r["environment"] for r in rows} == {
        "webhook:1": "PRODUCTION", "webhook:6": "STAGING"}
    assert rows[0]["id"].startswith("webhook:1:shared:")


@pytest.mark.parametrize(("text", "ok"), [
    ("2020-01-01T12:00:00+00:00", True), ("2020-01-01T12:00:00+0000", True),
    ("2020-01-01T12:00:00.123+00:00", True), ("2020-01-01T12:00:00.123456+00:00", False),
    ("2020-01-01T12:00:00.5+00:00", True), ("2020-01-01 12:00:00", True),
    ("2020-01-01 12:00", True), ("2020-01-01", True), ("2020-01-01T12:00:00Z", True),
    ("2020-01-01T12:00:00.123456Z", True), ("2020-01-01T12:00:00", False),
    ("yesterday", False),
])
def test_dates_as_v103_parses_them(text: str, ok: bool) -> None:
    assert (parse_devlake_date(text) is not None) == ok


def test_set_token_replaces_the_global_key(devlake: FakeDevLake) -> None:
    path = "/rest/plugins/webhook/connections/1/deployments"
    devlake.set_token("new")
    assert call(devlake, "POST", path, deployment_payload("d"), key=GLOBAL_KEY)[0] == 403
    assert call(devlake, "POST", path, deployment_payload("d"), key="new")[0] == 200


def test_no_token_no_check() -> None:
    with FakeDevLake(token=None) as fake:
        assert call(fake, "POST", "/rest/plugins/webhook/connections/1/deployments",
                    deployment_payload("d"))[0] == 200


def _basic(user: str, password: str) -> str:
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_config_ui_password_leaves_api_rest_open(devlake: FakeDevLake) -> None:
    """As config-ui's nginx.conf with ADMIN_USER/ADMIN_PASS (checked on nginx 1.22 in front
    of DevLake v1.0.3): ``/api/`` asks for the password, ``/api/rest/`` is ``auth_basic off``
    so the API key's ``Bearer`` reaches DevLake untouched; the backend's own door has none."""
    devlake.config_ui_login = ("admin", "s3cret")
    status, page, headers = call(devlake, "GET", "/api/version", key=GLOBAL_KEY)
    assert status == 401 and "401 Authorization Required" in page
    assert headers["WWW-Authenticate"] == 'Basic realm="DevLake Config UI"'
    assert call(devlake, "GET", "/api/version", header=_basic("admin", "wrong"))[0] == 401
    assert call(devlake, "GET", "/api/version", header=_basic("admin", "s3cret"))[1] == {
        "version": devlake.version}
    assert call(devlake, "POST", "/api/rest/plugins/webhook/connections/6/deployments",
                deployment_payload("d1"), key=GLOBAL_KEY)[0] == 200
    assert call(devlake, "POST", "/api/rest/plugins/webhook/connections/6/deployments",
                deployment_payload("d1"))[0] == 401  # DevLake's own: token is missing
    assert call(devlake, "GET", "/version")[0] == 200


def test_config_ui_body_limit_and_backend_down(devlake: FakeDevLake) -> None:
    """config-ui's nginx answers 413 past client_max_body_size (20m) and 502 while the
    backend is down, with its own HTML pages; the backend's door has no limit."""
    path = "/plugins/webhook/connections/6/deployments"
    big = deployment_payload("big")
    big["deploymentCommits"][0]["commitMsg"] = "x" * (20 * 1024 * 1024)
    status, page, _ = call(devlake, "POST", "/api/rest" + path, big, key=GLOBAL_KEY)
    assert status == 413 and "413 Request Entity Too Large" in page
    assert call(devlake, "POST", "/rest" + path, big, key=GLOBAL_KEY)[0] == 200
    devlake.backend_down = True
    status, page, _ = call(devlake, "POST", "/api/rest" + path, deployment_payload("d"),
                           key=GLOBAL_KEY)
    assert status == 502 and "502 Bad Gateway" in page
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        call(devlake, "POST", "/rest" + path, deployment_payload("d"), key=GLOBAL_KEY)
    devlake.backend_down = False
    assert call(devlake, "POST", "/api/rest" + path, deployment_payload("d"),
                key=GLOBAL_KEY)[0] == 200


def test_more_commit_rows_than_one_insert_holds(devlake: FakeDevLake) -> None:
    """As DevLake v1.0.3 and main 420e494b: 2114 rows stored, 2115 answered 500, none stored."""
    rows = deployment_payload("x")["deploymentCommits"]
    body = deployment_payload("many")
    body["deploymentCommits"] = [rows[0] | {"commitSha": f"{n:040x}"} for n in range(2115)]
    status, answer, _ = call(devlake, "POST", "/plugins/webhook/connections/6/deployments", body)
    assert status == 500
    assert answer["message"] == ("Error 1390 (HY000): Prepared statement contains too many "
                                 "placeholders (500)")
    assert "many" not in devlake.cicd_deployments
    body["deploymentCommits"] = body["deploymentCommits"][:2114]
    assert call(devlake, "POST", "/plugins/webhook/connections/6/deployments", body)[0] == 200
    assert len(devlake.commit_rows()) == 2114
