"""The ``integration.devlake`` section: prefixes, routable names, per-target keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from doraforwarder.config import ConfigError, load_config
from tests.conftest import write_config

HEAD = """
integration:
  devlake:
    enabled: true
    base_url: "https://devlake.example.com/"
"""


def devlake(body: str) -> str:
    return HEAD + "".join(f"    {line}\n" for line in body.strip("\n").splitlines())


TEAMS = """
project_id: "1"
teams:
  - {name: a, project_id: "2", argocd_components: [a]}
  - {name: b, connection_name: hook, argocd_components: [b]}
"""

BAD = [
    ("api_prefix /api", 'project_id: "1"\napi_prefix: /api',
     "integration.devlake.api_prefix: '/api' is not a DevLake API prefix: use /api/rest "
     "when base_url is config-ui"),
    ("api_prefix other", 'project_id: "1"\napi_prefix: /devlake', "or /rest when base_url"),
    ("slash in a team's connection name", TEAMS + '  - {name: c, connection_name: "x/y", '
     "argocd_components: [c]}",
     "integration.devlake.teams[2].connection_name: DevLake cannot route 'x/y'"),
    ("slash in the global project name", 'project_name: "a/b"',
     "integration.devlake.project_name: DevLake cannot route 'a/b'"),
    ("parenthesis through config-ui", 'connection_name: "hook (prod)"',
     "integration.devlake.connection_name: DevLake cannot route 'hook (prod)': it holds ( )"),
    ("name too long", f'project_name: "{"p" * 101}"', "longer than 100"),
    ("project whose connection name is too long", f'project_name: "{"p" * 95}"',
     "its incident connection"),
    ("connection id not a number", 'project_id: "team-hook"',
     "integration.devlake.project_id: 'team-hook' is not a webhook connection id"),
    ("team connection id zero", 'project_id: "1"\nteams:\n  - {name: a, project_id: "0"}',
     "integration.devlake.teams[0].project_id"),
    ("token_env not a name", 'project_id: "1"\ntoken_env: "MY-KEY"',
     "not an environment variable name"),
    ("one target, two keys", 'project_id: "1"\nteams:\n'
     '  - {name: a, project_id: "2", token_env: A_KEY, argocd_components: [a]}\n'
     '  - {name: b, project_id: "2", token_env: B_KEY, argocd_components: [b]}',
     "name different keys (B_KEY and A_KEY)"),
]


@pytest.mark.parametrize(("case", "body", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_devlake_sections(tmp_path: Path, case: str, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, devlake(body)))
    assert message in str(info.value)


@pytest.mark.parametrize("prefix", ["/api/rest", "/api/rest/", "api/rest", "/rest", "/rest/"])
def test_both_prefixes_load(tmp_path: Path, prefix: str) -> None:
    config = load_config(write_config(tmp_path, devlake(f'project_id: "1"\napi_prefix: {prefix}')))
    assert config.settings.integration.devlake.prefix == "/" + prefix.strip("/")


def test_parentheses_are_fine_on_the_backend(tmp_path: Path) -> None:
    text = devlake('connection_name: "hook (prod)"\napi_prefix: /rest')
    assert load_config(write_config(tmp_path, text)).settings.integration.devlake.connection_name


def test_per_target_keys_from_env_and_files(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "team-a-key"
    key_file.write_text("team-a-secret\n")
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN", "global-secret")
    monkeypatch.setenv("TEAM_A_KEY_FILE", str(key_file))
    text = devlake('project_id: "1"\nteams:\n'
                   '  - {name: a, project_id: "2", token_env: TEAM_A_KEY}\n'
                   '  - {name: b, project_id: "3", token_env: TEAM_B_KEY}\n'
                   '  - {name: c, project_id: "4"}')
    config = load_config(write_config(tmp_path, text))
    secrets = config.secrets
    assert secrets.devlake_key().get_secret_value() == "global-secret"  # type: ignore[union-attr]
    assert secrets.devlake_key("TEAM_A_KEY").get_secret_value() == "team-a-secret"  # type: ignore[union-attr]
    assert secrets.devlake_key("TEAM_B_KEY") is None
    assert "team-a-secret" in secrets.values()
    shown = str(config.redacted()) + repr(config)
    assert "team-a-secret" not in shown and "global-secret" not in shown
    assert config.redacted()["secrets"]["TEAM_A_KEY"] == "***"


def test_unreadable_key_file_names_the_variable(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_A_KEY_FILE", str(tmp_path / "nope"))
    text = devlake('project_id: "1"\ntoken_env: TEAM_A_KEY')
    with pytest.raises(ConfigError, match="TEAM_A_KEY_FILE names"):
        load_config(write_config(tmp_path, text))


def test_the_reference_single_key_setup_is_unchanged(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVLAKE_WEBHOOK_TOKEN", "the-one-key")
    config = load_config(write_config(tmp_path, devlake(TEAMS)))
    assert config.settings.integration.devlake.token_envs() == ["DEVLAKE_WEBHOOK_TOKEN"]
    assert config.secrets.devlake_webhook_token is not None
    assert config.secrets.devlake_key().get_secret_value() == "the-one-key"  # type: ignore[union-attr]
