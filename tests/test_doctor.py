"""``waap doctor``'s profiling-tool findings, on folder trees laid out as JetPack, the CUDA toolkit and a toolbox
lay them out. (The Docker, cgroup and NVML findings: tests/test_cli.py and tests/test_nvml_real_library.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from profiler.doctor import TOOL_PLACES, check_profiling_tool


def _program(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def _nowhere(_: str) -> Optional[str]:
    return None


def test_a_tool_in_the_toolbox_is_lent_to_every_app(tmp_path: Path) -> None:
    _program(tmp_path / "toolbox" / "bin" / "nsys")
    f = check_profiling_tool("nsys", which=_nowhere, env={"WAAP_TOOLBOX": str(tmp_path / "toolbox")}, places=())
    assert f.ok and f.name == "nsys"
    assert f.detail == f"nsys in the toolbox WAAP_TOOLBOX={tmp_path / 'toolbox'} (lent to every app)"


def test_a_tool_at_the_toolbox_root_counts_too(tmp_path: Path) -> None:
    _program(tmp_path / "toolbox" / "tau_exec")
    f = check_profiling_tool("tau", which=_nowhere, env={"WAAP_TOOLBOX": str(tmp_path / "toolbox")}, places=())
    assert f.ok and "toolbox" in f.detail


def test_jetpacks_nsys_is_found_and_the_toolbox_value_that_lends_it_is_given(tmp_path: Path) -> None:
    home = tmp_path / "opt" / "nvidia" / "nsight-systems" / "2023.4.4"
    found = _program(home / "bin" / "nsys")
    f = check_profiling_tool("nsys", which=_nowhere, env={},
                             places=(str(tmp_path / "opt/nvidia/nsight-systems/*/bin/nsys"),))
    assert f.ok
    assert f"nsys at {found} on this machine" in f.detail and f"WAAP_TOOLBOX={home}" in f.detail


def test_a_tool_on_path_is_found(tmp_path: Path) -> None:
    found = _program(tmp_path / "bin" / "nvprof")
    f = check_profiling_tool("nvprof", which=lambda name: str(found) if name == "nvprof" else None, env={},
                             places=())
    assert f.ok and f"WAAP_TOOLBOX={tmp_path}" in f.detail


def test_a_file_that_is_not_executable_is_not_a_tool(tmp_path: Path) -> None:
    _program(tmp_path / "toolbox" / "bin" / "nsys", executable=False)
    _program(tmp_path / "cuda" / "bin" / "nsys", executable=False)
    f = check_profiling_tool("nsys", which=_nowhere, env={"WAAP_TOOLBOX": str(tmp_path / "toolbox")},
                             places=(str(tmp_path / "cuda/bin/nsys"),))
    assert not f.ok
    assert f.detail == f"nsys not found here and not in the toolbox WAAP_TOOLBOX={tmp_path / 'toolbox'}"


@pytest.mark.parametrize("tool", sorted(TOOL_PLACES))
def test_a_missing_tool_says_where_it_comes_from_and_how_apps_get_it(tool: str) -> None:
    f = check_profiling_tool(tool, which=_nowhere, env={}, places=())
    assert not f.ok and not f.required
    assert "WAAP_TOOLBOX" in f.hint and "docs/tools.md" in f.hint
