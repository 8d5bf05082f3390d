"""The image (deploy/Containerfile) without a container engine: its build stage's files are
copied to a scratch directory and built into a wheel, which is installed into a fresh venv
with the pinned constraints, as the Containerfile does; then the installed ``streams`` runs
and carries its schemas and migrations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
LOCK = ROOT / "deploy" / "requirements.lock"


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def test_the_wheel_installs_as_the_containerfile_does_and_runs(tmp_path: Path) -> None:
    text = CONTAINERFILE.read_text()
    _, build, runtime = text.split("\nFROM ")  # comments, the build stage, the image
    copied = re.findall(r"^COPY (.+) \S+$", build, re.M)
    src = tmp_path / "src"
    src.mkdir()
    for line in copied:  # the build stage's COPY lines: what the wheel is built from
        for name in line.split():
            target = ROOT / name
            if target.is_dir():
                shutil.copytree(target, src / name, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc"))
            else:
                shutil.copy(target, src / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", tmp_path / "dist",
        ".", cwd=src)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    wheels = sorted((tmp_path / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    assert "pip install --constraint /tmp/requirements.lock /tmp/dist/*.whl" in runtime
    run(venv / "bin" / "pip", "install", "--constraint", LOCK, wheels[0])

    # every pinned package is installed at its pin, and nothing unpinned
    frozen = {line for line in run(venv / "bin" / "pip", "freeze").splitlines()
              if not line.startswith("xp-streams")}
    pinned = {line for line in LOCK.read_text().splitlines() if line and line[0] != "#"}
    assert frozen == pinned, (sorted(frozen - pinned), sorted(pinned - frozen))

    # the harness goes, as the Containerfile removes it
    site = next((venv / "lib").glob("python3.*/site-packages"))
    removed = re.findall(r"/opt/xp-streams/lib/python3\.11/site-packages/(streams/\w+)", runtime)
    assert sorted(removed) == ["streams/dev", "streams/lab"], removed
    for package in removed:
        shutil.rmtree(site / package)

    streams = venv / "bin" / "streams"
    usage = run(streams, "--help")
    for command in ("worker", "sink", "totals-writer", "rules-sink", "monitor", "migrate"):
        assert f"  {command} " in usage, command
    policy = tmp_path / "policy.json"  # validating it needs the schemas inside the wheel
    policy.write_text(json.dumps({
        "kind": "policy", "policy_id": "daily_login", "version": 1,
        "effective_day": "2099-01-01", "definition": {"base_xp": 10, "streak_curve": {
            "type": "table", "steps": [{"from_day": 1, "pct": 100}]}}}))
    assert "daily_login" in run(streams, "policy", "validate", "--offline", policy,
                                cwd=tmp_path)
    bench = subprocess.run([streams, "lab", "bench"], capture_output=True, text=True, timeout=60,
                           check=False)
    lines = (bench.stdout + bench.stderr).strip().splitlines()
    assert bench.returncode == 1 and len(lines) == 1 and "harness" in lines[0], lines
    listed = run(venv / "bin" / "python", "-c",
                 "from streams.db.migrate import SQL_DIR; "
                 "print(sorted(p.name for p in SQL_DIR.glob('V*.sql')))", cwd=tmp_path)
    assert listed.strip() == str(sorted(p.name for p in (ROOT / "sql").glob("V*.sql")))


def test_the_image_runs_as_a_non_root_user_with_streams_as_its_entrypoint() -> None:
    text = CONTAINERFILE.read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert 'ENTRYPOINT ["streams"]' in text
    assert "FROM docker.io/library/python:3.11-slim" in text
    assert "EXPOSE 9400" in text
