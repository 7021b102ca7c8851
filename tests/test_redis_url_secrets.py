"""A Redis password written inside ``storage.redis.url`` never shows (issue 19, finding 7).

The forms: an unencoded ``@`` or ``/`` in the userinfo (redis-py reads the
userinfo up to the *last* ``@``), and the ``?password=`` query parameter
redis-py also accepts. Checked where the URL is shown (``display_url``:
``/api/v1/status``, ``status``, ``doctor``, log lines), in ``check-config``,
in a real CLI run's output, and in the log redactor's secrets.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from doraforwarder.config import RedisConfig, load_config, masked_url, url_passwords
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.logging import configure_logging, get_logger, redactor
from doraforwarder.storage import current_address

SECRET = "s3cret-p@ss/word"


@pytest.mark.parametrize(("url", "shown", "passwords"), [
    ("redis://h:6379/0", "redis://h:6379/0", []),
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0", ["pw"]),
    ("redis://dora:p@ss@h:6379/0", "redis://dora:***@h:6379/0", ["p@ss"]),
    ("redis://dora:pa/ss@h:6379/0", "redis://dora:***@h:6379/0", ["pa/ss"]),
    ("redis://dora@h:6379/0", "redis://dora@h:6379/0", []),
    ("rediss://:%40pw%2F@h/0", "rediss://:***@h/0", ["%40pw%2F", "@pw/"]),
    ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1",
     ["s3cret"]),
    ("redis://h/0?db=1&Password=a+b%21", "redis://h/0?db=1&Password=***",
     ["a+b%21", "a+b!", "a b!"]),
    ("redis://u:x@y@h/0?sentinel_password=z1&ssl_cert_reqs=none",
     "redis://u:***@h/0?sentinel_password=***&ssl_cert_reqs=none", ["x@y", "z1"]),
    ("unix://:pw@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2", ["pw"]),
])
def test_url_passwords_are_masked_and_found(url: str, shown: str, passwords: list[str]) -> None:
    assert masked_url(url) == shown
    assert url_passwords(url) == passwords
    assert RedisConfig(url=url).display_url() == shown


@pytest.fixture(params=["userinfo", "query"])
def url_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = (f"redis://dora:{SECRET}@127.0.0.1:1/0" if request.param == "userinfo"
           else f"redis://127.0.0.1:1/0?password={SECRET}")
    path = tmp_path / "config.yaml"
    path.write_text(f'storage: {{redis: {{url: "{url}"}}}}\n'
                    "argocd: {kubeconfig: /nonexistent/kubeconfig}\n")
    return path


def test_the_redactor_masks_url_passwords(url_config: Path) -> None:
    loaded = load_config(url_config)
    assert SECRET in loaded.secrets.values()
    out = io.StringIO()
    configure_logging("info", "json", loaded.secrets.values(), stream=out)
    try:
        get_logger("test").error("redis said no", error=f"AUTH {SECRET} refused")
    finally:
        redactor._secrets.remove(SECRET)
    assert SECRET not in out.getvalue()
    assert "AUTH *** refused" in out.getvalue() or "AUTH ***" in out.getvalue()


def test_check_config_never_shows_the_url_password(url_config: Path) -> None:
    loaded = load_config(url_config)
    assert SECRET not in json.dumps(loaded.redacted())
    result = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "check-config", "--config", str(url_config)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:1" in result.stdout
    for part in (SECRET, "s3cret", "ss/word"):
        assert part not in result.stdout + result.stderr


def test_status_command_and_its_log_never_show_the_url_password(url_config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "doraforwarder", "status", "--config", str(url_config)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "cannot reach Redis at redis://" in result.stderr
    for part in (SECRET, "s3cret", "ss/word"):
        assert part not in result.stdout + result.stderr


async def test_api_status_address_never_shows_the_url_password(
        url_config: Path, redis_client: aioredis.Redis) -> None:
    context = AppContext(config=load_config(url_config), redis=redis_client, keys=Keys("u"))
    shown = await current_address(context)
    assert "127.0.0.1:1" in shown
    assert "s3cret" not in shown and "ss/word" not in shown
