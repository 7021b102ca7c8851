"""An OCI distribution client that reads an image's labels, with access as Kubernetes has it.

Three reads per image, at most: the manifest (by tag: a ``HEAD`` for its
digest first), the platform's manifest when that was an index, and the config
blob holding ``config.Labels``. Every document is checked against its digest,
so what the cache keeps by digest is what the registry really holds.

Access: anonymous first; a ``401`` challenge is answered the way container
runtimes answer it (Bearer: a pull token for the repository's scope from the
realm, with the registry's credentials if a credentials file has some;
Basic: the credentials), and the token is kept for the next requests. A
``429`` is waited out for its ``Retry-After``, at most
``registry.max_retry_after`` and never past the deployment's deadline; a
network error or a ``5xx`` is retried :data:`TRANSIENT_RETRIES` times.
Timeouts are per registry. Bodies are read with :mod:`doraforwarder.bodies`.
Tokens and passwords are registered with the log redactor the moment they
are known, and no message here ever holds one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from doraforwarder import bodies, http_backend
from doraforwarder.backoff import Backoff, parse_retry_after, wait_or_stop
from doraforwarder.commits.github import Call
from doraforwarder.commits.oci import (
    ACCEPT,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Credential,
    CredentialError,
    RegistryImage,
    choose_manifest,
    config_labels,
    credential_for,
    manifest_annotations,
    parse_challenge,
    parse_docker_config,
)
from doraforwarder.config import RegistryConfig
from doraforwarder.logging import get_logger, redactor

MANIFEST_LIMIT = 4 * 1024 * 1024
"""Bytes of a manifest or index (the distribution server refuses larger ones too)."""
CONFIG_LIMIT = 8 * 1024 * 1024
"""Bytes of an image config blob (labels and history; usually a few KiB)."""
RATE_LIMIT_TRIES = 3
"""429 answers waited out for one request before it counts as failed."""
TRANSIENT_RETRIES = 3
"""Retries of a network error or a 5xx (capped, jittered backoff) before a read fails.

Bounded, unlike GitHub's retries until ``github.resolve_timeout``: an image whose
registry is down (or not let through the NetworkPolicy) would otherwise hold
every deployment that ships it for the whole timeout; a blip is ridden out."""


class RegistryError(Exception):
    """A registry read that failed; the message is one line and holds no credential."""


@dataclass(frozen=True)
class ImageLabels:
    digest: str
    labels: dict[str, str]


def load_credentials(paths: list[str]) -> list[dict[str, Credential]]:
    """Every configured credentials file, parsed; their secrets go to the redactor."""
    tables: list[dict[str, Credential]] = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CredentialError(f"registry.credentials_files: {path}: cannot be read "
                                  f"({exc.strerror or type(exc).__name__})") from None
        table = parse_docker_config(text, f"registry.credentials_files: {path}")
        for credential in table.values():
            redactor.add([credential.password, credential.basic().split(" ", 1)[1]])
        tables.append(table)
    return tables


def _verify(data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256":
        return  # sha512 is allowed by the spec and rare; the transport is trusted then
    if hashlib.sha256(data).hexdigest() != expected.lower():
        raise RegistryError(f"{what} does not match its digest {digest}")


def _whole(response: httpx.Response, what: str, limit: int) -> bytes:
    try:
        return bodies.whole(response, what, limit).content
    except bodies.TooLarge as exc:
        raise RegistryError(str(exc)) from None


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        raise RegistryError(f"{what} is not JSON") from None


class RegistryClient:
    """Reads labels from registries; one per resolver, sharing tokens across its look-ups."""

    def __init__(self, config: RegistryConfig, credentials: list[dict[str, Credential]],
                 client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self.plain_http = {host.strip().lower() for host in config.plain_http}
        self.timeouts = {host.strip().lower(): seconds for host, seconds in config.timeouts.items()}
        self.max_retry_after = config.max_retry_after.total_seconds()
        self.backoff_base_s, self.backoff_cap_s = 0.5, 4.0
        self._own = client is None
        self._http = client or http_backend.async_client(follow_redirects=True,
                                                         timeout=config.timeout_seconds)
        self._auth: dict[tuple[str, str], str] = {}
        """(registry, scope) -> the Authorization header that worked last."""
        self.log = get_logger("registry")

    @classmethod
    def from_config(cls, config: RegistryConfig,
                    client: httpx.AsyncClient | None = None) -> RegistryClient:
        return cls(config, load_credentials(config.credentials_files), client)

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    def has_credentials(self, image: RegistryImage) -> bool:
        return credential_for(image.registry, self.credentials) is not None

    # --- reads ----------------------------------------------------------------------------
    async def digest_of(self, image: RegistryImage, tag: str, call: Call) -> str:
        """The digest a tag points at now (a HEAD: Docker Hub does not count it as a pull)."""
        what = f"{image.registry}/{image.repository}:{tag}"
        response = await self._request("HEAD", image, f"manifests/{tag}", MANIFEST_LIMIT,
                                       call, what)
        self._expect_ok(response, what)
        digest = str(response.headers.get("Docker-Content-Digest", "")).strip()
        if digest.startswith("sha256:"):
            return digest
        # Some registries leave the header out of HEAD answers: read the manifest itself.
        response = await self._request("GET", image, f"manifests/{tag}", MANIFEST_LIMIT,
                                       call, what)
        self._expect_ok(response, what)
        return "sha256:" + hashlib.sha256(response.content).hexdigest()

    async def labels_at(self, image: RegistryImage, digest: str, call: Call) -> ImageLabels:
        """The labels of the image at ``digest`` (an index resolves to one platform)."""
        where = f"{image.registry}/{image.repository}@{digest}"
        document, kind = await self._manifest(image, digest, call, where)
        found: dict[str, str] = {}
        if kind in INDEX_TYPES or "manifests" in document:
            found.update(manifest_annotations(document))
            child = choose_manifest(document, self.config.platform)
            if child is None:
                raise RegistryError(f"{where}: the index lists no image manifest")
            document, kind = await self._manifest(image, child, call, f"{where} ({child})")
        config = document.get("config") if isinstance(document, dict) else None
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            raise RegistryError(f"{where}: manifest of media type {kind or 'unknown'} has no "
                                "config blob")
        found.update(manifest_annotations(document))
        blob_digest = config["digest"]
        response = await self._request("GET", image, f"blobs/{blob_digest}", CONFIG_LIMIT,
                                       call, f"{where} config")
        self._expect_ok(response, f"{where} config blob")
        body = _whole(response, f"{where} config blob", CONFIG_LIMIT)
        _verify(body, blob_digest, f"{where} config blob")
        found.update(config_labels(_json(response, f"{where} config blob")))
        return ImageLabels(digest, found)

    async def _manifest(self, image: RegistryImage, digest: str, call: Call,
                        where: str) -> tuple[dict[str, Any], str]:
        response = await self._request("GET", image, f"manifests/{digest}", MANIFEST_LIMIT,
                                       call, where)
        self._expect_ok(response, where)
        body = _whole(response, f"{where} manifest", MANIFEST_LIMIT)
        _verify(body, digest, f"{where} manifest")
        document = _json(response, f"{where} manifest")
        if not isinstance(document, dict):
            raise RegistryError(f"{where}: manifest is not a JSON object")
        kind = str(document.get("mediaType")
                   or response.headers.get("Content-Type", "").split(";")[0].strip())
        if kind and kind not in INDEX_TYPES | MANIFEST_TYPES:
            raise RegistryError(f"{where}: manifest media type {kind} is not an OCI or Docker "
                                "v2 image")
        return document, kind

    def _expect_ok(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            raise RegistryError(f"{what}: not found in the registry (404)")
        if status in (401, 403):
            raise RegistryError(f"{what}: access refused ({status}); "
                                + ("the configured credentials are not allowed to pull it"
                                   if self._credential(what) else
                                   "name a pull secret in registry.credentials_files"))
        if status == 429:
            raise RegistryError(f"{what}: still rate-limited (429) after "
                                f"{RATE_LIMIT_TRIES} waits")
        detail = bodies.note(response).strip().splitlines()[:1]
        raise RegistryError(f"{what}: the registry answered {status}"
                            + (f": {redactor.redact_text(detail[0])[:200]}" if detail else ""))

    def _credential(self, what: str) -> Credential | None:
        return credential_for(what.split("/", 1)[0], self.credentials)

    # --- requests with authentication, rate limits and timeouts ---------------------------
    def _url(self, image: RegistryImage, path: str) -> str:
        scheme = "http" if image.registry in self.plain_http else "https"
        return f"{scheme}://{image.api_host}/v2/{image.repository}/{path}"

    def timeout_of(self, image: RegistryImage) -> float:
        return self.timeouts.get(image.registry, self.config.timeout_seconds)

    async def _request(self, method: str, image: RegistryImage, path: str, limit: int,
                       call: Call, what: str) -> httpx.Response:
        scope = f"repository:{image.repository}:pull"
        key = (image.registry, scope)
        authenticated = False
        waits = 0
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        while True:
            if call.stop.is_set():
                raise asyncio.CancelledError("stopping")
            left = call.seconds_left()
            if left <= 0:
                raise RegistryError(f"{what}: github.resolve_timeout reached")
            headers = {"Accept": ACCEPT}
            if key in self._auth:
                headers["Authorization"] = self._auth[key]
            try:
                response = await self._send(method, self._url(image, path), limit, headers,
                                            min(self.timeout_of(image), left), what)
            except _Transient as exc:
                if backoff.failures >= TRANSIENT_RETRIES:
                    raise RegistryError(str(exc)) from None
                await self._pause(backoff.next_delay(), call)
                continue
            if response.status_code >= 500 and backoff.failures < TRANSIENT_RETRIES:
                await self._pause(backoff.next_delay(), call)
                continue
            if response.status_code == 401 and not authenticated:
                authenticated = True
                await self._authenticate(image, scope, response, call, what)
                continue
            if response.status_code == 429 and waits < RATE_LIMIT_TRIES:
                waits += 1
                wait = min(_retry_after(response), self.max_retry_after)
                self.log.warning("registry rate limit: waiting", registry=image.registry,
                                 seconds=round(wait, 1))
                await self._pause(wait, call)
                continue
            return response

    @staticmethod
    async def _pause(seconds: float, call: Call) -> None:
        """Wait, at most until the deadline; CancelledError once ``stop`` is set."""
        if await wait_or_stop(call.stop, min(seconds, max(0.0, call.seconds_left()))):
            raise asyncio.CancelledError("stopping")

    async def _send(self, method: str, url: str, limit: int, headers: dict[str, str],
                    seconds: float, what: str, **options: Any) -> httpx.Response:
        try:
            return await bodies.fetch(self._http, method, url, limit=limit, headers=headers,
                                      timeout=seconds, **options)
        except httpx.TimeoutException:
            raise _Transient(f"{what}: no answer within {seconds:g}s") from None
        except httpx.TransportError as exc:
            raise _Transient(f"{what}: {type(exc).__name__}: "
                             f"{redactor.redact_text(str(exc))[:200]}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RegistryError(f"{what}: {type(exc).__name__}: "
                                f"{redactor.redact_text(str(exc))[:200]}") from None

    async def _authenticate(self, image: RegistryImage, scope: str, response: httpx.Response,
                            call: Call, what: str) -> None:
        """Answer a 401's challenge; the header that works is kept for the scope."""
        key = (image.registry, scope)
        self._auth.pop(key, None)
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        credential = credential_for(image.registry, self.credentials)
        if challenge is None:
            raise RegistryError(f"{what}: the registry answered 401 without a Bearer or Basic "
                                "challenge")
        if challenge.scheme == "basic":
            if credential is None:
                raise RegistryError(f"{what}: the registry asks for a password; name a pull "
                                    "secret in registry.credentials_files")
            self._auth[key] = credential.basic()
            return
        params = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        headers = {"Accept": "application/json"}
        if credential is not None:
            headers["Authorization"] = credential.basic()
        realm = challenge.params["realm"]
        left = call.seconds_left()
        if left <= 0:
            raise RegistryError(f"{what}: github.resolve_timeout reached")
        answer = await self._send("GET", realm, bodies.TOKEN_LIMIT, headers,
                                  min(self.timeout_of(image), left), f"{what}: token",
                                  params=params)
        if answer.status_code in (401, 403):
            raise RegistryError(
                f"{what}: the token service refused "
                + ("the configured credentials" if credential is not None else
                   "anonymous access; name a pull secret in registry.credentials_files")
                + f" ({answer.status_code})")
        if answer.status_code != 200:
            raise RegistryError(f"{what}: the token service answered {answer.status_code}")
        _whole(answer, f"{what}: token answer", bodies.TOKEN_LIMIT)
        document = _json(answer, f"{what}: token answer")
        token = document.get("token") or document.get("access_token") \
            if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{what}: the token answer holds no token")
        redactor.add([token])
        self._auth[key] = f"Bearer {token}"


class _Transient(RegistryError):
    """A network error or a timeout: retried a few times before it is the answer."""


def _retry_after(response: httpx.Response) -> float:
    found = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if found is None else found
