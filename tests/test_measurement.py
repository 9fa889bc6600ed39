"""Measurements through ``waap run`` on the real engine: samples, summary, manifest, the live endpoint."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from profiler.rundir import read_jsonl, read_manifest

from .conftest import REPO_ROOT
from .test_cli import WAAP, run_dirs, wait_for

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_endpoint_is_scraped_during_a_run(base_image, results):
    port = _free_port()
    code = "import time\nx = 0\nend = time.time() + 4\nwhile time.time() < end: x += 1"
    proc = subprocess.Popen(
        [*WAAP, "run", "--image", base_image, "--args", f"python3 -c '{code}'", "--metrics", "system,container",
         "--interval", "0.2", "--live", f"127.0.0.1:{port}", "-o", str(results)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        run = wait_for(lambda: next(iter(run_dirs(results)), None), what="the run directory")

        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                return ""
            return text if "waap_container_cpu_usage_percent{" in text else ""

        text = wait_for(scrape, timeout=20, what="container metrics on the live endpoint")
        assert f'run_id="{read_manifest(run)["run_id"]}"' in text
        busy = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("waap_container_cpu_usage_percent{")]
        assert busy and max(busy) > 50  # the app burns a core while we scrape
        assert "waap_system_memory_used_bytes" in text
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"live metrics: http://127.0.0.1:{port}/metrics" in out


def test_samples_summary_and_manifest_of_a_measured_run(base_image, results):
    code = "import time\nb = bytearray(100 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(1.5)"
    p = subprocess.run(
        [*WAAP, "run", "--image", base_image, "--args", f"python3 -c '{code}'", "--metrics",
         "system,container,gpu-summary", "--interval", "0.1", "-o", str(results)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    [run] = run_dirs(results)
    m = read_manifest(run)
    statuses = {c["name"]: c["status"] for c in m["collectors"]}
    assert statuses == {"system": "ok", "container": "ok", "gpu-summary": "unavailable"}
    assert m["sampling"]["samples"] >= 10 and m["sampling"]["missed_ticks"] >= 0
    samples = read_jsonl(run / "samples.jsonl")
    assert {s["source"] for s in samples} == {"system", "container"}
    stamps = [s["ts_ns"] for s in samples]
    assert stamps == sorted(stamps) and stamps[0] - m["start_ns"] < 100_000_000 and stamps[-1] >= m["end_ns"] - 10**9
    summary = json.loads((run / "summary.json").read_text())
    working_set = summary["metrics"]["container.memory.working_set_bytes"]
    assert 90 * 2**20 < working_set["max"] < 130 * 2**20
    assert set(working_set) >= {"count", "min", "mean", "p50", "p95", "max", "last"}
    assert "container.memory.working_set_bytes" in p.stdout and "gpu-summary: unavailable" in p.stdout


def test_a_required_collector_that_cannot_work_fails_the_run(base_image, tmp_path, results):
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"image: {base_image}\nmetrics: [system, gpu-summary]\nrequired: [gpu-summary]\n"
        "targets:\n  - {args: 'sleep 30', timeout: 20}\n"
    )
    t0 = time.monotonic()
    p = subprocess.run([*WAAP, "run", "--profile", str(profile), "-o", str(results)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 15  # the app was stopped at once, not left to its timeout
    [run] = run_dirs(results)
    m = read_manifest(run)
    assert (m["status"], m["stop_reason"]) == ("failed", "error")
    assert "gpu-summary" in m["error"]
    assert Path(run / "app.log").exists()


def test_app_metrics_and_knobs_through_the_socket(base_image, tmp_path, results):
    app = (
        "import time, waap_plugin as plugin\n"
        "res = plugin.param('res', 0).get()\n"
        "plugin.gauge('res').set(res)\n"
        "frames = plugin.metric('frames')\n"
        "for _ in range(50):\n"
        "    with plugin.timer('infer'):\n"
        "        time.sleep(0.02)\n"
        "    frames.inc()\n"
    )
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"image: {base_image}\nmetrics: [custom]\nparams: {{res: 640}}\n"
        f"targets:\n  - {{name: knob, params: {{res: 320}}, args: [python3, -c, {json.dumps(app)}]}}\n"
    )
    p = subprocess.run([*WAAP, "run", "--profile", str(profile), "-o", str(results)], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    [run] = run_dirs(results)
    summary = json.loads((run / "summary.json").read_text())["metrics"]
    assert summary["app.res"]["last"] == 320  # the target's knob, answered by the runner
    assert summary["app.frames.total"]["last"] == 50
    assert 20 < summary["app.frames.total"]["rate_per_s"] < 55  # ~50 frames at ~20 ms each: the rate is the FPS
    assert summary["app.infer.count_total"]["last"] == 50
    m = read_manifest(run)
    [custom] = m["collectors"]
    assert custom["status"] == "ok" and custom["counters"]["socket.lines_rejected"] == 0
    assert not (run / "sock").exists()  # the socket folder served the run only


def test_pywaggle_app_needs_no_change(docker_client, results):
    image = "waap-test-pywaggle:latest"
    try:
        docker_client.images.get(image)
    except Exception:
        pytest.fail(f"image {image} is missing; build it with scripts/build-images.sh")
    p = subprocess.run([*WAAP, "run", "--image", image, "--metrics", "custom", "--timeout", "60", "-o", str(results)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    [run] = run_dirs(results)
    m = read_manifest(run)
    published = read_jsonl(run / "output" / "pywaggle" / "data.ndjson")
    assert published, "the app published nothing"
    samples = [s for s in read_jsonl(run / "samples.jsonl") if s["source"] == "pywaggle"]
    assert len(samples) == sum(1 for r in published if isinstance(r["value"], (int, float)))
    live = [s for s in samples if "app.test.fixed" not in s["values"]]  # one publish carries its own 2023 stamp
    assert live and all(m["start_ns"] - 10**9 < s["ts_ns"] < m["end_ns"] + 10**9 for s in live)  # UTC, not local
    assert m["app"]["env"]["PYWAGGLE_LOG_DIR"] == "/app/profiling_output/pywaggle"
