"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback, for the tests.

:class:`Alertmanager` writes a configuration whose only receiver is a
webhook to the daemon (``send_resolved``, a bearer token), with short
``group_wait``/``group_interval``/``repeat_interval`` so notifications
come within a second or two, starts the binary without clustering, and
posts alerts to its API (``POST /api/v2/alerts``) as Prometheus does.
Tests skip with one line when the binary is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from doraforwarder.testing.http_fake import free_port

BINARY_NAMES = ("prometheus-alertmanager", "alertmanager")


def binary() -> str | None:
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Alertmanager:
    """One Alertmanager process whose webhook receiver posts to ``webhook_url``."""

    def __init__(self, directory: Path, webhook_url: str, *, token: str | None = None,
                 group_by: list[str] | None = None, group_wait: str = "200ms",
                 group_interval: str = "500ms", repeat_interval: str = "1s") -> None:
        found = binary()
        assert found is not None, "prometheus-alertmanager is not installed"
        self.binary = found
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": True}
        if token is not None:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
        self.config = {
            "route": {"receiver": "doraforwarder", "group_by": group_by or ["alertname"],
                      "group_wait": group_wait, "group_interval": group_interval,
                      "repeat_interval": repeat_interval},
            "receivers": [{"name": "doraforwarder", "webhook_configs": [webhook]}],
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "alertmanager.log"

    def start(self, timeout: float = 20.0) -> Alertmanager:
        config = self.directory / "alertmanager.yml"
        config.write_text(yaml.safe_dump(self.config))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={config}",
                 f"--storage.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--cluster.listen-address=", "--log.level=debug"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"alertmanager exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"alertmanager not ready: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Alertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, labels: Mapping[str, str], *, starts_at: datetime,
             ends_at: datetime | None = None,
             annotations: Mapping[str, str] | None = None) -> None:
        """One alert as Prometheus posts it; ``ends_at`` in the past resolves it."""
        alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {}),
                                 "startsAt": iso(starts_at),
                                 "generatorURL": "http://prometheus.example/graph"}
        if ends_at is not None:
            alert["endsAt"] = iso(ends_at)
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts", data=json.dumps([alert]).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200, answer.status

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as answer:
            found: list[dict[str, Any]] = json.loads(answer.read())
            return found

    def notifications_sent(self) -> int:
        """``alertmanager_notifications_total`` of the webhook integration."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith('alertmanager_notifications_total{integration="webhook"}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0
