"""Shared fixtures. Integration tests run against the real Docker engine and the images ``scripts/build-images.sh``
builds offline; they track and force-remove every container they cause."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Tuple

import docker
import pytest
from jsonschema import Draft202012Validator

from profiler.identity import LABEL, LABEL_RUN_DIR
from profiler.profile import Profile
from profiler.runner import Runner, RunResult

BASE_IMAGE = os.environ.get("WAAP_BASE_IMAGE", "waap-base:bookworm")
PROFILER_IMAGE = os.environ.get("WAAP_PROFILER_IMAGE", "waap-profiler:latest")
DEMO_IMAGE = os.environ.get("WAAP_DEMO_IMAGE", "waap-demo-objcounter:latest")
# the demo with NVIDIA's real nsys and nvprof: built by `scripts/build-images.sh nvidia` (scripts/test.sh does)
NVIDIA_IMAGE = os.environ.get("WAAP_NVIDIA_IMAGE", "waap-test-nvidia:latest")
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    if os.environ.get("WAAP_SKIP_DOCKER") == "1":
        pytest.skip("WAAP_SKIP_DOCKER=1: Docker integration tests switched off")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:  # a missing engine is a broken setup, not a reason to skip
        pytest.fail(f"no Docker engine answers ({e}); run scripts/setup.sh or set WAAP_SKIP_DOCKER=1")
    yield client
    client.close()


def _require_image(client: docker.DockerClient, name: str, *, skip_unless: str = "") -> str:
    """The image's name; a missing image fails the test, or skips it saying ``skip_unless`` (how to build it)."""
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        if skip_unless:
            pytest.skip(f"image {name} is missing: {skip_unless}")
        pytest.fail(f"image {name} is missing; build it with scripts/build-images.sh")
    return name


def run_one(client: docker.DockerClient, results: Path, profile: Profile, **runner: Any) -> Tuple[RunResult, Any]:
    """Run a one-run profile; its result and its manifest, checked against the manifest's JSON Schema."""
    session = Runner(client, output_root=results, pull_policy="never", **runner).run_session(profile)
    assert len(session.runs) == 1
    run = session.runs[0]
    manifest = json.loads((run.info.path / "manifest.json").read_text())
    with open(REPO_ROOT / "profiler/schemas/manifest.schema.json", encoding="utf-8") as fh:
        Draft202012Validator(json.load(fh)).validate(manifest)
    return run, manifest


@pytest.fixture(scope="session")
def base_image(docker_client: docker.DockerClient) -> str:
    return _require_image(docker_client, BASE_IMAGE)


@pytest.fixture(scope="session")
def profiler_image(docker_client: docker.DockerClient) -> str:
    return _require_image(docker_client, PROFILER_IMAGE)


@pytest.fixture(scope="session")
def demo_image(docker_client: docker.DockerClient) -> str:
    return _require_image(docker_client, DEMO_IMAGE)


@pytest.fixture(scope="session")
def nvidia_image(docker_client: docker.DockerClient) -> str:
    return _require_image(docker_client, NVIDIA_IMAGE,
                          skip_unless="build it with scripts/build-images.sh nvidia (scripts/test.sh does)")


@pytest.fixture
def results(tmp_path: Path, docker_client: docker.DockerClient) -> Iterator[Path]:
    """A results folder; whatever WaAP containers point into it are force-removed afterwards."""
    root = tmp_path / "results"
    yield root
    for container in docker_client.containers.list(all=True, filters={"label": LABEL}):
        if container.labels.get(LABEL_RUN_DIR, "").startswith(str(tmp_path)):
            container.remove(force=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Docker registry (Debian's docker-registry) on loopback; yields its ``host:port``.

    The engine treats 127.0.0.0/8 registries as insecure by default, so plain HTTP works without daemon changes."""
    import shutil
    import subprocess
    import urllib.request

    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    if not Path(binary).exists():
        pytest.fail("docker-registry is not installed; run scripts/setup.sh")
    root = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    log = root / "registry.log"
    with open(log, "wb") as log_fh:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log_fh, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"docker-registry exited: {log.read_text(errors='replace')}")
                time.sleep(0.1)
        else:
            pytest.fail("docker-registry did not answer within 10 s")
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)
