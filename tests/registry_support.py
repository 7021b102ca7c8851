"""A real registry for the tests: Debian's ``docker-registry`` (CNCF distribution) on loopback.

:class:`Registry` writes a config in a temporary directory (filesystem
storage there), starts ``docker-registry serve`` on a free loopback port and
waits until ``/v2/`` answers. With ``auth="token"`` it trusts a throw-away
certificate and sends clients to :class:`TokenServer`, a small token service
in the test that signs JWTs (RS256, ``x5c`` header) with ``openssl``: pull
tokens for anyone on repositories outside ``private/``, pull and push for
the one user it knows. With ``auth="htpasswd"`` it asks for Basic
credentials from a bcrypt file written by ``htpasswd`` (apache2-utils).

:func:`push_image` and :func:`push_index` put images in it over the registry
API, as a build would: a config blob carrying labels, a layer, an image
manifest; an index of several platforms.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from doraforwarder.commits.oci import parse_challenge
from doraforwarder.testing.http_fake import BackgroundServer, FakeServer, free_port

REGISTRY_BINARY = "docker-registry"
USER, PASSWORD = "puller", "registry-pass-0000"
SERVICE, ISSUER = "test-registry", "test-token-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def registry_missing() -> str | None:
    """Why the registry tests cannot run here, or None."""
    if shutil.which(REGISTRY_BINARY) is None:
        return "docker-registry is not installed (apt-get install docker-registry)"
    if shutil.which("openssl") is None:  # the token service signs its JWTs with it
        return "openssl is not installed (apt-get install openssl)"
    return None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer(FakeServer):
    """The registry's token service: JWTs for ``service``, signed with a throw-away key."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = directory / "token.key", directory / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=test-token-issuer", "-keyout", str(self.key),
                        "-out", str(self.cert)], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        app = web.Application()
        app.router.add_get("/token", self._token)
        self.server = BackgroundServer(app)

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def _sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}." \
                        f"{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    async def _token(self, request: web.Request) -> web.Response:
        scope = request.query.get("scope", "")
        self.requests.append({"scope": scope, "service": request.query.get("service", ""),
                              "auth": "basic" if request.headers.get("Authorization") else ""})
        user = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            given = base64.b64decode(header[6:]).decode()
            if given != f"{USER}:{PASSWORD}":
                return web.json_response({"details": "wrong credentials"}, status=401)
            user = USER
        access = []
        for item in scope.split(" "):
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            if user is None and name.startswith("private/"):
                continue  # no access: the registry then answers 401 to the token
            wanted = actions.split(",")
            allowed = [a for a in wanted if a == "pull" or (a == "push" and user)]
            access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        token = await self.server.loop.run_in_executor(None, self._sign, {
            "iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access})
        self.issued.append(token)
        return web.json_response({"token": token, "expires_in": 300})


class Registry:
    """``docker-registry serve`` on loopback, storage and config under ``directory``."""

    def __init__(self, directory: Path, auth: str | None = None,
                 tokens: TokenServer | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.auth = auth
        self.tokens = tokens
        self.process: subprocess.Popen[bytes] | None = None
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(directory / "data")}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": uuid.uuid4().hex},
        }
        if auth == "token":
            assert tokens is not None
            config["auth"] = {"token": {"realm": tokens.realm, "service": SERVICE,
                                        "issuer": ISSUER, "rootcertbundle": str(tokens.cert)}}
        elif auth == "htpasswd":
            htpasswd = shutil.which("htpasswd")
            assert htpasswd, "htpasswd is not installed (apt-get install apache2-utils)"
            line = subprocess.run([htpasswd, "-nbB", USER, PASSWORD], check=True,
                                  capture_output=True, text=True).stdout.strip()
            (directory / "htpasswd").write_text(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "test-basic",
                                           "path": str(directory / "htpasswd")}}
        self.config = directory / "config.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Registry:
        log = (self.directory / "registry.log").open("ab")
        self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(self.config)],
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("docker-registry exited: "
                                   + (self.directory / "registry.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 20s")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pushing, as a build does ---------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10,
                            auth=_PushAuth() if self.auth else None)

    def push_image(self, repository: str, tag: str | None, labels: dict[str, str],
                   *, architecture: str = "amd64", annotations: dict[str, str] | None = None
                   ) -> str:
        """Push a one-layer image carrying ``labels``; its manifest digest."""
        with self.client() as http:
            config = json.dumps({"architecture": architecture, "os": "linux",
                                 "config": {"Labels": labels},
                                 "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            layer = f"layer of {repository} {architecture} {uuid.uuid4().hex}".encode()
            manifest: dict[str, Any] = {
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": _blob(http, repository, config, OCI_CONFIG),
                "layers": [_blob(http, repository, layer, OCI_LAYER)],
            }
            if annotations:
                manifest["annotations"] = annotations
            return _put_manifest(http, repository, tag, manifest, OCI_MANIFEST)

    def push_index(self, repository: str, tag: str,
                   platforms: dict[str, dict[str, str]]) -> str:
        """Push one image per ``os/arch`` (with its labels) and an index of them."""
        entries = []
        for platform, labels in platforms.items():
            os_name, architecture = platform.split("/")[:2]
            digest = self.push_image(repository, None, labels, architecture=architecture)
            with self.client() as http:
                size = len(http.get(f"/v2/{repository}/manifests/{digest}",
                                    headers={"Accept": OCI_MANIFEST}).content)
            entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                            "platform": {"os": os_name, "architecture": architecture}})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        with self.client() as http:
            return _put_manifest(http, repository, tag, index, OCI_INDEX)


class _PushAuth(httpx.Auth):
    """The pushing user's credentials, answering Bearer or Basic challenges."""

    def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
        response = yield request
        if response.status_code != 401:
            return
        challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        assert challenge is not None
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if challenge.scheme == "bearer":
            scope = challenge.params.get("scope", "")
            token = httpx.get(challenge.params["realm"], headers={"Authorization": basic},
                              params={"service": challenge.params.get("service", ""),
                                      "scope": scope}).json()["token"]
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            request.headers["Authorization"] = basic
        yield request


def _blob(http: httpx.Client, repository: str, data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = http.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    put = http.put(f"{location}{separator}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201, put.text
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _put_manifest(http: httpx.Client, repository: str, tag: str | None,
                  manifest: dict[str, Any], media_type: str) -> str:
    body = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    answer = http.put(f"/v2/{repository}/manifests/{tag or digest}", content=body,
                      headers={"Content-Type": media_type})
    assert answer.status_code == 201, answer.text
    assert answer.headers["Docker-Content-Digest"] == digest
    return digest


def docker_config(path: Path, registry: str, user: str = USER, password: str = PASSWORD) -> Path:
    """A ``.dockerconfigjson`` file naming ``registry``, as a pull Secret mounts it."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return path
