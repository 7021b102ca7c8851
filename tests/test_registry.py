"""The registry client against the real CNCF distribution server (Debian's docker-registry).

Three registries on loopback: one anonymous, one behind token auth (public
repositories pull anonymously through the token service, ``private/`` ones need
the pull secret), one behind htpasswd (Basic). Images are pushed by the tests
over the registry API. What the real server cannot do on demand (answer 429, a
huge manifest, a wrong digest) is shown on an ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doraforwarder.commits.github import Call
from doraforwarder.commits.oci import OCI_REVISION, OCI_SOURCE, CredentialError, registry_image
from doraforwarder.commits.registry import (
    MANIFEST_LIMIT,
    RegistryClient,
    RegistryError,
    load_credentials,
)
from doraforwarder.config import RegistryConfig
from doraforwarder.logging import redactor
from tests.registry_support import (
    PASSWORD,
    USER,
    Registry,
    TokenServer,
    docker_config,
    registry_missing,
)

pytestmark = pytest.mark.skipif(registry_missing() is not None,
                                reason=registry_missing() or "")
SHA = "0123456789abcdef0123456789abcdef01234567"
LABELS = {OCI_REVISION: SHA, OCI_SOURCE: "https://github.com/org/app"}


class Registries:
    def __init__(self, root: Path) -> None:
        self.tokens = TokenServer(root / "tokens").start()
        self.anonymous = Registry(root / "anonymous").start()
        self.token = Registry(root / "token", auth="token", tokens=self.tokens).start()
        self.basic = (Registry(root / "basic", auth="htpasswd").start()
                      if shutil.which("htpasswd") else None)

    def close(self) -> None:
        for registry in (self.anonymous, self.token, self.basic):
            if registry is not None:
                registry.close()
        self.tokens.close()

    @property
    def hosts(self) -> list[str]:
        return [r.host for r in (self.anonymous, self.token, self.basic) if r is not None]


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    found = Registries(tmp_path_factory.mktemp("registries"))
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
async def client_for(registries: Registries) -> AsyncIterator[Any]:
    made: list[RegistryClient] = []

    def factory(credentials: list[str] = (), **settings: Any) -> RegistryClient:  # type: ignore[assignment]
        config = RegistryConfig(enabled=True, plain_http=registries.hosts,
                                credentials_files=list(credentials), **settings)
        client = RegistryClient.from_config(config)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


def call(seconds: float = 30) -> Call:
    return Call(deadline=time.time() + seconds)


async def labels_of(client: RegistryClient, reference: str) -> dict[str, str]:
    name, _, tag = reference.rpartition(":")
    if "@" in reference:
        name, _, digest = reference.partition("@")
    image = registry_image(name)
    assert image is not None
    if "@" not in reference:
        digest = await client.digest_of(image, tag, call())
    return (await client.labels_at(image, digest, call())).labels


async def test_tag_and_digest_give_the_labels(registries: Registries, client_for: Any) -> None:
    registry = registries.anonymous
    digest = registry.push_image("org/app", "v1.4.2", LABELS)
    client = client_for()
    assert await labels_of(client, f"{registry.host}/org/app:v1.4.2") == LABELS
    assert await labels_of(client, f"{registry.host}/org/app@{digest}") == LABELS
    image = registry_image(f"{registry.host}/org/app")
    assert image is not None
    assert await client.digest_of(image, "v1.4.2", call()) == digest


async def test_an_index_gives_the_configured_platform_else_amd64(
        registries: Registries, client_for: Any) -> None:
    registry = registries.anonymous
    registry.push_index("org/multi", "v2", {
        "linux/arm64": {**LABELS, "platform": "arm64"},
        "linux/amd64": {**LABELS, "platform": "amd64"},
    })
    registry.push_index("org/armonly", "v1", {"linux/arm64": {**LABELS, "platform": "arm64"}})
    reference = f"{registry.host}/org/multi:v2"
    assert (await labels_of(client_for(), reference))["platform"] == "amd64"
    assert (await labels_of(client_for(platform="linux/arm64"), reference))["platform"] == "arm64"
    armonly = f"{registry.host}/org/armonly:v1"
    assert (await labels_of(client_for(), armonly))["platform"] == "arm64"


async def test_manifest_annotations_count_when_the_config_has_no_label(
        registries: Registries, client_for: Any) -> None:
    registry = registries.anonymous
    registry.push_image("org/annotated", "v1", {}, annotations={OCI_REVISION: SHA})
    assert await labels_of(client_for(), f"{registry.host}/org/annotated:v1") == {
        OCI_REVISION: SHA}


async def test_unknown_tag_is_one_line(registries: Registries, client_for: Any) -> None:
    with pytest.raises(RegistryError) as caught:
        await labels_of(client_for(), f"{registries.anonymous.host}/org/none:v9")
    assert str(caught.value) == \
        f"{registries.anonymous.host}/org/none:v9: not found in the registry (404)"


async def test_token_auth_anonymous_pull_of_a_public_repository(
        registries: Registries, client_for: Any) -> None:
    registry = registries.token
    registry.push_image("public/app", "v1.4.2", LABELS)
    before = len(registries.tokens.requests)
    client = client_for()
    assert await labels_of(client, f"{registry.host}/public/app:v1.4.2") == LABELS
    asked = registries.tokens.requests[before:]
    # One token for HEAD, manifest and config blob: kept for the scope.
    assert asked == [{"scope": "repository:public/app:pull", "service": "test-registry",
                      "auth": ""}]


async def test_token_auth_private_repository_needs_the_pull_secret(
        registries: Registries, client_for: Any, tmp_path: Path) -> None:
    registry = registries.token
    registry.push_image("private/app", "v1.4.2", LABELS)
    reference = f"{registry.host}/private/app:v1.4.2"
    with pytest.raises(RegistryError) as caught:
        await labels_of(client_for(), reference)
    assert "name a pull secret in registry.credentials_files" in str(caught.value)
    secret = docker_config(tmp_path / "config.json", registry.host)
    assert await labels_of(client_for([str(secret)]), reference) == LABELS
    wrong = docker_config(tmp_path / "wrong.json", registry.host, password="not-it-0000")
    with pytest.raises(RegistryError) as caught:
        await labels_of(client_for([str(wrong)]), reference)
    assert "refused the configured credentials (401)" in str(caught.value)
    assert "not-it-0000" not in str(caught.value)


async def test_basic_auth_registry(registries: Registries, client_for: Any,
                                   tmp_path: Path) -> None:
    if registries.basic is None:
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    registry = registries.basic
    registry.push_image("org/app", "v1", LABELS)
    reference = f"{registry.host}/org/app:v1"
    with pytest.raises(RegistryError) as caught:
        await labels_of(client_for(), reference)
    assert "asks for a password" in str(caught.value)
    # The kubelet's spellings: a URL key with a scheme and path.
    secret = docker_config(tmp_path / "config.json", f"http://{registry.host}/v2/")
    assert await labels_of(client_for([str(secret)]), reference) == LABELS


async def test_secrets_reach_the_redactor(registries: Registries, client_for: Any,
                                          tmp_path: Path) -> None:
    registry = registries.token
    registry.push_image("private/redacted", "v1", LABELS)
    secret = docker_config(tmp_path / "config.json", registry.host)
    before = len(registries.tokens.issued)
    await labels_of(client_for([str(secret)]), f"{registry.host}/private/redacted:v1")
    token = registries.tokens.issued[before]
    assert redactor.redact_text(f"x {token} {PASSWORD} y") == "x *** *** y"
    assert USER == "puller"  # a user name is not a secret


def test_credentials_file_errors_are_one_line_without_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {"r.example": {"auth": "%%%secret%%%"}}}))
    with pytest.raises(CredentialError) as caught:
        load_credentials([str(bad)])
    assert str(caught.value) == (f"registry.credentials_files: {bad}: the 'auth' of "
                                 "'r.example' is not base64 of user:password")
    with pytest.raises(CredentialError) as caught:
        load_credentials([str(tmp_path / "absent.json")])
    assert "cannot be read (No such file or directory)" in str(caught.value)


# --- what the real server does not do on demand ---------------------------------------------
def _mock_client(handler: Any, **settings: Any) -> RegistryClient:
    config = RegistryConfig(enabled=True, **settings)
    client = RegistryClient(config, [],
                            httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    client.backoff_base_s, client.backoff_cap_s = 0.01, 0.02
    return client


async def test_429_waits_retry_after_capped_then_answers() -> None:
    asked: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(time.monotonic())
        if len(asked) == 1:
            return httpx.Response(429, headers={"Retry-After": "3600"})
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})

    client = _mock_client(handler, max_retry_after="200ms")
    image = registry_image("r.example/org/app")
    assert image is not None
    assert await client.digest_of(image, "v1", call()) == "sha256:" + "a" * 64
    assert 0.15 < asked[1] - asked[0] < 2  # an hour asked, the cap obeyed


async def test_429_forever_gives_up_after_three_waits() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(429, headers={"Retry-After": "0"})

    client = _mock_client(handler)
    image = registry_image("r.example/org/app")
    assert image is not None
    with pytest.raises(RegistryError, match=r"still rate-limited \(429\) after 3 waits"):
        await client.digest_of(image, "v1", call())
    assert count == 4


async def test_429_wait_ends_at_the_deadline() -> None:
    client = _mock_client(lambda request: httpx.Response(429, headers={"Retry-After": "30"}))
    image = registry_image("r.example/org/app")
    assert image is not None
    started = time.monotonic()
    with pytest.raises(RegistryError, match="resolve_timeout reached"):
        await client.digest_of(image, "v1", call(0.3))
    assert time.monotonic() - started < 2


async def test_429_wait_ends_at_stop() -> None:
    client = _mock_client(lambda request: httpx.Response(429, headers={"Retry-After": "30"}))
    image = registry_image("r.example/org/app")
    assert image is not None
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, stop.set)
    with pytest.raises(asyncio.CancelledError):
        await client.digest_of(image, "v1", Call(deadline=time.time() + 30, stop=stop))


async def test_a_manifest_over_the_bound_is_not_read() -> None:
    big = b"{" + b" " * (MANIFEST_LIMIT + 10) + b"}"
    digest = "sha256:" + hashlib.sha256(big).hexdigest()
    client = _mock_client(lambda request: httpx.Response(200, content=big))
    image = registry_image("r.example/org/app")
    assert image is not None
    with pytest.raises(RegistryError, match="manifest is larger than 4096 KiB; not read"):
        await client.labels_at(image, digest, call())


async def test_a_manifest_not_matching_its_digest_is_refused() -> None:
    body = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "b" * 64}})
    client = _mock_client(lambda request: httpx.Response(200, content=body.encode()))
    image = registry_image("r.example/org/app")
    assert image is not None
    with pytest.raises(RegistryError, match="does not match its digest"):
        await client.labels_at(image, "sha256:" + "c" * 64, call())


async def test_per_registry_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = _mock_client(slow, timeouts={"slow.example": 2.5})
    image = registry_image("slow.example/org/app")
    assert image is not None
    assert client.timeout_of(image) == 2.5
    assert client.timeout_of(registry_image("quay.io/org/app")) == 10  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match=r"slow.example/org/app:v1: no answer within 2.5s"):
        await client.digest_of(image, "v1", call())



async def test_a_realm_that_is_no_url_is_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://a\x01b/t"'})

    client = _mock_client(handler)
    image = registry_image("r.example/org/app")
    assert image is not None
    with pytest.raises(RegistryError, match=r"^r.example/org/app:v1: token: InvalidURL: "):
        await client.digest_of(image, "v1", call())


@pytest.mark.parametrize("failure", ["503", "connect", "timeout"])
async def test_a_blip_is_retried_a_few_times_then_is_the_answer(failure: str) -> None:
    attempts = 0
    fail_first = 3

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts <= fail_first:
            if failure == "connect":
                raise httpx.ConnectError("refused", request=request)
            if failure == "timeout":
                raise httpx.ReadTimeout("slow", request=request)
            return httpx.Response(503)
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})

    client = _mock_client(handler)
    image = registry_image("r.example/org/app")
    assert image is not None
    assert await client.digest_of(image, "v1", call()) == "sha256:" + "a" * 64
    assert attempts == 4
    attempts, fail_first = 0, 100
    with pytest.raises(RegistryError):
        await client.digest_of(image, "v1", call())
    assert attempts == 4  # the first try and three retries


async def test_a_blob_redirected_to_storage_gets_no_registry_credential() -> None:
    config = json.dumps({"config": {"Labels": {OCI_REVISION: SHA}}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"digest": config_digest, "size": len(config)},
                           "layers": []}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    at_storage: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.example":
            at_storage.append(request.headers)
            return httpx.Response(200, content=config)
        assert request.headers["Authorization"] == "Bearer registry-token-0000"
        if "/blobs/" in request.url.path:
            return httpx.Response(307, headers={"Location": "https://storage.example/b?sig=1"})
        return httpx.Response(200, content=manifest)

    client = RegistryClient(RegistryConfig(enabled=True), [], httpx.AsyncClient(
        transport=httpx.MockTransport(handler), follow_redirects=True))
    client._auth[("r.example", "repository:org/app:pull")] = "Bearer registry-token-0000"
    image = registry_image("r.example/org/app")
    assert image is not None
    found = await client.labels_at(image, manifest_digest, call())
    assert found.labels == {OCI_REVISION: SHA}
    assert len(at_storage) == 1 and "Authorization" not in at_storage[0]


async def test_the_daemons_client_follows_redirects() -> None:
    client = RegistryClient.from_config(RegistryConfig(enabled=True))
    try:
        assert client._http.follow_redirects  # blobs are served from storage elsewhere
    finally:
        await client.aclose()
