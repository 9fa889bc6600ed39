"""Tests for ``profiler.dockerargs``: the allow-list for ``app_docker_args``. Plain unit tests, no Docker."""

from __future__ import annotations

import os
import random
import shlex
import socket
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from profiler import dockerargs
from profiler.dockerargs import (
    DENIED_HOST_PATHS,
    MAX_DOCKER_ARGS_CHARS,
    MIN_MEMORY_BYTES,
    DockerPolicy,
    parse_docker_args,
    parse_size,
)
from profiler.errors import SpecError
from profiler.profile import DockerOptions, Limits

GiB = 1024**3
MiB = 1024**2

# Every host path a data mount must never reach, whatever the data roots say.
DANGEROUS_HOST_PATHS = (
    "/",
    "/etc",
    "/etc/passwd",
    "/etc/shadow",
    "/proc",
    "/proc/1/root",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/mem",
    "/boot",
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run",
    "/var/run",
    "/var",
    "/var/lib/docker",
    "/root",
    "/home/nvidia/docker.sock",
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A stand-in for /home/nvidia with the seed's config file in it; resolved, so realpath is the identity."""
    root = tmp_path.resolve() / "home" / "nvidia"
    config = root / "luke_projects" / "config_dir"
    config.mkdir(parents=True)
    (config / "data-config.json").write_text("{}\n", encoding="utf-8")
    (root / "data").mkdir()
    (root / "data" / "frames.bin").write_bytes(b"\0" * 16)
    return root


@pytest.fixture
def policy(home: Path) -> DockerPolicy:
    return DockerPolicy(data_roots=(str(home),), devices=("/dev/video0",))


def parse(text: str, policy: Optional[DockerPolicy] = None) -> Tuple[DockerOptions, Limits]:
    return parse_docker_args(text, policy if policy is not None else DockerPolicy())


def refused(text: str, policy: Optional[DockerPolicy] = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, policy)
    error = info.value
    assert str(error).startswith("app_docker_args: "), str(error)
    return error


# ----------------------------------------------------------------------------------------------------------
# Defaults and the shape of errors


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_string_gives_defaults(text: str) -> None:
    options, limits = parse(text)
    assert options == DockerOptions()
    assert options.network == "run" and options.runtime is None
    assert limits == Limits()


def test_error_names_source_and_flag() -> None:
    error = refused("--privileged")
    assert error.source == "app_docker_args"
    assert error.field == "--privileged"
    assert str(error).startswith("app_docker_args: --privileged: not allowed: ")
    assert "root on the device" in str(error)


def test_custom_source_names_the_cli_option() -> None:
    with pytest.raises(SpecError) as info:
        parse_docker_args("--privileged", DockerPolicy(), source="--docker-args")
    assert str(info.value).startswith("--docker-args: --privileged: not allowed")


def test_public_names() -> None:
    assert set(dockerargs.__all__) >= {"DockerPolicy", "parse_docker_args", "parse_size"}
    for name in dockerargs.__all__:
        assert hasattr(dockerargs, name)


# ----------------------------------------------------------------------------------------------------------
# Data mounts


def test_seed_example_is_accepted_under_a_data_root(home: Path, policy: DockerPolicy) -> None:
    host = home / "luke_projects" / "config_dir" / "data-config.json"
    options, limits = parse(f"-v {host}:/run/waggle/data-config.json", policy)
    assert options.data_mounts == ((str(host), "/run/waggle/data-config.json"),)
    assert limits == Limits()
    assert options.env == {} and options.network == "run"


def test_seed_example_is_refused_without_data_roots(home: Path) -> None:
    host = home / "luke_projects" / "config_dir" / "data-config.json"
    error = refused(f"-v {host}:/run/waggle/data-config.json")
    assert error.field == "-v"
    assert "no data roots" in str(error) and "WAAP_DATA_ROOTS" in str(error)


def test_mount_outside_the_data_roots_is_refused(tmp_path: Path, home: Path, policy: DockerPolicy) -> None:
    other = tmp_path.resolve() / "elsewhere"
    other.mkdir()
    error = refused(f"--volume {other}:/data", policy)
    assert error.field == "--volume"
    assert "not inside a data root" in str(error) and str(home) in str(error)


def test_sibling_with_a_common_prefix_is_not_inside(home: Path, policy: DockerPolicy) -> None:
    sibling = home.parent / (home.name + "x")
    sibling.mkdir()
    assert "not inside a data root" in str(refused(f"-v {sibling}:/data", policy))


@pytest.mark.parametrize("form", ["{h}:/data", "{h}:/data:ro", "{h}/:/data/", "{h}//.:/data//"])
def test_mount_forms_are_read_only_and_normalised(home: Path, policy: DockerPolicy, form: str) -> None:
    text = form.format(h=home / "data")
    for flag in (f"-v {text}", f"-v{text}", f"-v={text}", f"--volume {text}", f"--volume={text}"):
        options, _ = parse(flag, policy)
        assert options.data_mounts == ((str(home / "data"), "/data"),)


def test_the_data_root_itself_may_be_mounted(home: Path, policy: DockerPolicy) -> None:
    options, _ = parse(f"-v {home}:/home", policy)
    assert options.data_mounts == ((str(home), "/home"),)


def test_several_mounts_keep_their_order(home: Path, policy: DockerPolicy) -> None:
    options, _ = parse(f"-v {home}/data:/a -v {home}/data/frames.bin:/b/frames.bin:ro", policy)
    assert options.data_mounts == ((str(home / "data"), "/a"), (str(home / "data" / "frames.bin"), "/b/frames.bin"))


@pytest.mark.parametrize("mode", ["rw", "ro,rw", "z", "Z", "ro,z", "shared", "rshared", "ro,rslave", "nocopy", ""])
def test_mount_modes_other_than_ro_are_refused(home: Path, policy: DockerPolicy, mode: str) -> None:
    error = refused(f"-v {home}/data:/data:{mode}", policy)
    assert error.field == "-v"
    if "rw" in mode.split(","):
        assert "always read-only" in str(error)
    else:
        assert "only ':ro'" in str(error)


def test_symlink_in_a_data_root_to_etc_is_refused(home: Path, policy: DockerPolicy) -> None:
    (home / "etc").symlink_to("/etc")
    (home / "passwd").symlink_to("/etc/passwd")
    for path in (home / "etc", home / "etc" / "passwd", home / "passwd"):
        error = refused(f"-v {path}:/x:ro", policy)
        assert "symbolic links" in str(error) and "/etc" in str(error)


def test_symlink_out_of_the_data_root_is_refused(tmp_path: Path, home: Path, policy: DockerPolicy) -> None:
    outside = tmp_path.resolve() / "outside"
    outside.mkdir()
    (home / "out").symlink_to(outside)
    error = refused(f"-v {home}/out:/x", policy)
    assert "not inside a data root" in str(error) and str(outside) in str(error)


def test_symlink_within_the_data_root_resolves(home: Path, policy: DockerPolicy) -> None:
    (home / "latest").symlink_to(home / "data")
    options, _ = parse(f"-v {home}/latest:/data", policy)
    assert options.data_mounts == ((str(home / "data"), "/data"),)  # the file the engine will really mount


def test_data_root_reached_through_a_symlink(tmp_path: Path, home: Path) -> None:
    link = tmp_path.resolve() / "nvidia-link"
    link.symlink_to(home)
    via_link = DockerPolicy(data_roots=(str(link),))
    options, _ = parse(f"-v {link}/data:/data", via_link)
    assert options.data_mounts == ((str(home / "data"), "/data"),)
    options, _ = parse(f"-v {home}/data:/data", via_link)  # the real path of a root is inside it too
    assert options.data_mounts == ((str(home / "data"), "/data"),)


@pytest.mark.parametrize("path", DANGEROUS_HOST_PATHS)
def test_denied_host_paths_are_refused_even_under_a_misconfigured_root(path: str) -> None:
    everything = DockerPolicy(data_roots=("/",))
    for text in (f"-v {path}:/host", f"--volume={path}:/host:ro", f"-v{path}:/host"):
        error = refused(text, everything)
        assert error.field in ("-v", "--volume")
        assert "never mounted" in str(error)


def test_leading_double_slash_does_not_dodge_the_deny_list() -> None:
    error = refused("-v //etc:/x", DockerPolicy(data_roots=("/",)))
    assert "/etc is never mounted" in str(error)


def test_docker_sock_anywhere_is_refused(home: Path, policy: DockerPolicy) -> None:
    (home / "data" / "docker.sock").write_text("", encoding="utf-8")
    assert "docker.sock" in str(refused(f"-v {home}/data/docker.sock:/var/run/docker.sock", policy))


def test_socket_in_a_data_root_is_refused(home: Path, policy: DockerPolicy) -> None:
    path = home / "data" / "svc"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert "not a regular file or folder" in str(refused(f"-v {path}:/svc", policy))


def test_hard_linked_file_is_refused(home: Path, policy: DockerPolicy) -> None:
    os.link(home / "data" / "frames.bin", home / "data" / "copy.bin")
    assert "hard links" in str(refused(f"-v {home}/data/copy.bin:/copy.bin", policy))


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("{h}/../nvidia/data", "may not contain '..'"),
        ("{h}/data/../../../../etc", "may not contain '..'"),
        ("data", "must be absolute"),
        ("myvolume", "named volumes are not accepted"),
        ("{h}/missing", "does not exist"),
    ],
)
def test_bad_host_paths(home: Path, policy: DockerPolicy, host: str, message: str) -> None:
    assert message in str(refused(f"-v {host.format(h=home)}:/data", policy))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("data", "must be absolute"),
        ("/", "root folder"),
        ("//", "root folder"),
        ("/proc", "/proc"),
        ("/proc/sys", "/proc"),
        ("/sys/kernel", "/sys"),
        ("/dev/shm", "/dev"),
        ("/data/../proc", "'..'"),
    ],
)
def test_bad_container_paths(home: Path, policy: DockerPolicy, target: str, message: str) -> None:
    assert message in str(refused(f"-v {home}/data:{target}", policy))


@pytest.mark.parametrize("text", ["-v {h}/data", "-v {h}/data:", "-v :/data", "-v {h}/data:/a:ro:x", "--volume="])
def test_malformed_volumes(home: Path, policy: DockerPolicy, text: str) -> None:
    assert "expected HOST:PATH" in str(refused(text.format(h=home), policy))


def test_the_same_container_path_twice_is_refused(home: Path, policy: DockerPolicy) -> None:
    assert "already the target" in str(refused(f"-v {home}/data:/data -v {home}:/data/", policy))


@pytest.mark.parametrize(
    "text",
    [
        "--mount type=bind,source={h}/data,target=/data,readonly",
        "--mount=type=bind,src=/,dst=/host",
        "--mount type=volume,src=x,dst=/x",
        "--mount type=tmpfs,dst=/x",
    ],
)
def test_every_mount_is_refused(home: Path, policy: DockerPolicy, text: str) -> None:
    error = refused(text.format(h=home), policy)
    assert error.field == "--mount"
    assert "-v HOST:PATH:ro" in str(error)


# ----------------------------------------------------------------------------------------------------------
# Environment


@pytest.mark.parametrize(
    "text", ["-e A=1", "-eA=1", "-e=A=1", "--env A=1", "--env=A=1", "-e 'A=1'", '"-eA=1"', "-e A=1 -e A=1"]
)
def test_env_forms(text: str) -> None:
    options, _ = parse(text)
    assert options.env == {"A": "1"}


def test_env_values_are_kept_verbatim() -> None:
    text = "-e 'MSG=hello world' -e EMPTY= -e EQ=a=b -e 'CMD=$(rm -rf /); `id`' -e X=1 -e X=2"
    options, _ = parse(text)
    assert options.env == {"MSG": "hello world", "EMPTY": "", "EQ": "a=b", "CMD": "$(rm -rf /); `id`", "X": "2"}


@pytest.mark.parametrize("text", ["-e HOME", "--env AWS_SECRET_ACCESS_KEY", "-eDOCKER_HOST", "--env=PATH"])
def test_env_without_a_value_is_refused(text: str) -> None:
    error = refused(text)
    assert "runner's own environment" in str(error)
    assert error.field in ("-e", "--env")


@pytest.mark.parametrize("value", ["1A=x", "A-B=x", "=x", "A B=x", "", "A.B"])
def test_env_names_are_checked(value: str) -> None:
    assert "KEY=VALUE" in str(refused(f"-e {shlex.quote(value)}"))


def test_nvidia_variables_are_refused() -> None:
    error = refused("-e NVIDIA_VISIBLE_DEVICES=all")
    assert "NVIDIA_VISIBLE_DEVICES" in str(error) and "--runtime nvidia" in str(error)


# ----------------------------------------------------------------------------------------------------------
# Resource limits


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * MiB),
        ("1g", GiB),
        ("1G", GiB),
        ("1GiB", GiB),
        ("1gb", GiB),
        ("1.5g", 3 * GiB // 2),
        ("1024k", MiB),
        ("7340032", 7 * MiB),
        ("7340032b", 7 * MiB),
        ("2t", 2 * 1024**4),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "m", "1x", "-1g", "1e9", "1.g", "nan", "inf", "1 2", "99999999999999999999p"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("form", ["-m {}", "-m{}", "-m={}", "--memory {}", "--memory={}"])
def test_memory_forms(form: str) -> None:
    _, limits = parse(form.format("512m"))
    assert limits == Limits(memory_bytes=512 * MiB)


def test_limits_without_ceilings_are_accepted() -> None:
    _, limits = parse("-m 64g --cpus 128 --pids-limit 100000")
    assert limits == Limits(memory_bytes=64 * GiB, cpus=128.0, pids=100000)


def test_limits_within_ceilings() -> None:
    policy = DockerPolicy(max_memory_bytes=8 * GiB, max_cpus=4.0, max_pids=512)
    _, limits = parse("--memory=8g --cpus=4 --pids-limit=512", policy)
    assert limits == Limits(memory_bytes=8 * GiB, cpus=4.0, pids=512)
    _, limits = parse("-m 6m --cpus .5", policy)
    assert limits == Limits(memory_bytes=MIN_MEMORY_BYTES, cpus=0.5)


@pytest.mark.parametrize(
    ("text", "field", "ceiling"),
    [
        ("-m 9g", "-m", "8 GiB (the agent's WAAP_MAX_MEMORY)"),
        ("--memory=8193m", "--memory", "8 GiB"),
        ("--cpus 4.5", "--cpus", "4 CPUs (the agent's WAAP_MAX_CPUS)"),
        ("--pids-limit=513", "--pids-limit", "512 processes (the agent's WAAP_MAX_PIDS)"),
    ],
)
def test_limits_over_a_ceiling_name_it(text: str, field: str, ceiling: str) -> None:
    error = refused(text, DockerPolicy(max_memory_bytes=8 * GiB, max_cpus=4.0, max_pids=512))
    assert error.field == field
    assert "ceiling" in str(error) and ceiling in str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-m 5m", "at least 6 MiB"),
        ("-m lots", "expected a size"),
        ("--cpus 0", ">= 0.01"),
        ("--cpus=-1", ">= 0.01"),
        ("--cpus nan", ">= 0.01"),
        ("--cpus inf", ">= 0.01"),
        ("--cpus 1e3", ">= 0.01"),
        ("--pids-limit 0", ">= 1"),
        ("--pids-limit=-1", "unlimited"),
        ("--pids-limit 1.5", ">= 1"),
        ("-m 1g --memory 2g", "more than once"),
        ("--cpus 1 --cpus=2", "more than once"),
        ("--pids-limit 1 --pids-limit 1", "more than once"),
    ],
)
def test_bad_limits(text: str, message: str) -> None:
    assert message in str(refused(text))


def test_memory_swap_is_refused_with_a_reason() -> None:
    for text in ("--memory-swap 1g", "--memory-swap=-1"):
        error = refused(f"-m 1g {text}")
        assert error.field == "--memory-swap" and "-m/--memory" in str(error)


# ----------------------------------------------------------------------------------------------------------
# Runtime, network, devices


@pytest.mark.parametrize("text", ["--runtime nvidia", "--runtime=nvidia"])
def test_nvidia_runtime(text: str) -> None:
    options, _ = parse(text)
    assert options.runtime == "nvidia"
    error = refused(text, DockerPolicy(nvidia_runtime=False))
    assert "WAAP_NVIDIA_RUNTIME=0" in str(error)


@pytest.mark.parametrize("value", ["runc", "runsc", "kata", "io.containerd.runc.v2", "NVIDIA", "nvidia "])
def test_other_runtimes_are_refused(value: str) -> None:
    for text in (f"--runtime {shlex.quote(value)}", f"--runtime={shlex.quote(value)}"):
        error = refused(text)
        assert error.field == "--runtime" and "only 'nvidia'" in str(error)


@pytest.mark.parametrize("text", ["--network none", "--network=none", "--net none", "--net=none"])
def test_network_none(text: str) -> None:
    options, _ = parse(text)
    assert options.network == "none"


@pytest.mark.parametrize("value", ["host", "container:abc", "container:waap-run-1", "bridge", "default", "mynet"])
@pytest.mark.parametrize("flag", ["--network", "--net"])
def test_other_networks_are_refused(flag: str, value: str) -> None:
    for text in (f"{flag} {value}", f"{flag}={value}"):
        error = refused(text)
        assert error.field == flag
        assert "run's own network" in str(error)


def test_network_given_twice_is_refused() -> None:
    assert "more than once" in str(refused("--network none --net=none"))


@pytest.mark.parametrize(
    "text",
    [
        "--device /dev/video0",
        "--device=/dev/video0",
        "--device /dev/video0:/dev/video0",
        "--device=/dev/video0:/dev/video0:rwm",
        "--device /dev//video0 --device /dev/video0",
    ],
)
def test_listed_devices(text: str) -> None:
    options, _ = parse(text, DockerPolicy(devices=("/dev/video0", "/dev/video1")))
    assert options.devices == ("/dev/video0",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--device /dev/sda", "not a device this device's operator lists"),
        ("--device=/dev/mem", "WAAP_DEVICES"),
        ("--device /dev/video1", "/dev/video0"),
        ("--device /dev/video0:/dev/sda", "its own path"),
        ("--device /dev/video0:/dev/video0:r", "only the default 'rwm'"),
        ("--device /dev/video0:/dev/video0:rwm:x", "expected PATH"),
        ("--device video0", "absolute"),
        ("--device /dev/../dev/video0", "absolute device path"),
    ],
)
def test_bad_devices(text: str, message: str) -> None:
    error = refused(text, DockerPolicy(devices=("/dev/video0",)))
    assert error.field == "--device" and message in str(error)


def test_devices_need_a_policy() -> None:
    assert "none" in str(refused("--device /dev/video0"))


# ----------------------------------------------------------------------------------------------------------
# Everything else is refused, naming the flag

# (flag, value): the list and more; each is tried as --flag=value and --flag value (and -fVALUE).
REFUSED_WITH_VALUE: List[Tuple[str, str]] = [
    ("--pid", "host"),
    ("--pid", "container:abc"),
    ("--net", "host"),
    ("--net", "container:abc"),
    ("--network", "host"),
    ("--network", "container:abc"),
    ("--ipc", "host"),
    ("--ipc", "container:abc"),
    ("--userns", "host"),
    ("--uts", "host"),
    ("--cgroupns", "host"),
    ("--volumes-from", "other"),
    ("--volume", "/:/host"),
    ("--volume", "/etc:/etc:ro"),
    ("--volume", "/proc:/host/proc"),
    ("--volume", "/sys:/host/sys"),
    ("--volume", "/dev:/dev"),
    ("--volume", "/boot:/boot"),
    ("--volume", "/var/run/docker.sock:/var/run/docker.sock"),
    ("--volume", "/run/docker.sock:/run/docker.sock"),
    ("-v", "/:/host"),
    ("-v", "/var/run/docker.sock:/var/run/docker.sock"),
    ("--device", "/dev/sda"),
    ("--cap-add", "SYS_ADMIN"),
    ("--cap-add", "ALL"),
    ("--cap-drop", "ALL"),
    ("--security-opt", "seccomp=unconfined"),
    ("--security-opt", "apparmor=unconfined"),
    ("--security-opt", "label=disable"),
    ("--security-opt", "no-new-privileges=false"),
    ("--publish", "8080:80"),
    ("-p", "8080:80"),
    ("--restart", "always"),
    ("--restart", "unless-stopped"),
    ("--env-file", "/etc/environment"),
    ("--mount", "type=bind,source=/,target=/host"),
    ("--device-cgroup-rule", "c *:* rwm"),
    ("--group-add", "docker"),
    ("--sysctl", "kernel.core_pattern=|/tmp/x"),
    ("--user", "0"),
    ("--user", "root:root"),
    ("-u", "0"),
    ("--entrypoint", "/bin/sh"),
    ("--name", "evil"),
    ("--label", "waap=1"),
    ("-l", "waap=1"),
    ("--cgroup-parent", "/"),
    ("--gpus", "all"),
    ("--tmpfs", "/x"),
    ("--add-host", "registry:10.0.0.1"),
    ("--ulimit", "nofile=1048576"),
    ("--workdir", "/"),
    ("-w", "/"),
    ("--hostname", "x"),
    ("-h", "x"),
    ("--shm-size", "1g"),
    ("--dns", "8.8.8.8"),
    ("--log-driver", "none"),
    ("--cpuset-cpus", "0-3"),
    ("--memory-swap", "-1"),
    ("--stop-signal", "SIGKILL"),
    ("--attach", "stdout"),
    ("-a", "stdout"),
]

REFUSED_ALONE = [
    "--privileged",
    "--rm",
    "-d",
    "--detach",
    "-i",
    "-t",
    "--interactive",
    "--tty",
    "-P",
    "--publish-all",
    "--oom-kill-disable",
    "--init",
    "--read-only",
    "--use-api-socket",
    "--help",
    "--no-healthcheck",
]


def _forms(flag: str, value: str) -> List[str]:
    quoted = shlex.quote(value)
    forms = [f"{flag}={quoted}", f"{flag} {quoted}"]
    if not flag.startswith("--"):
        forms.append(f"{flag}{quoted}")
    return forms


@pytest.mark.parametrize(("flag", "value"), REFUSED_WITH_VALUE)
def test_refused_options_name_the_flag_in_every_form(flag: str, value: str) -> None:
    # a misconfigured agent (every folder a data root, /dev/sda not listed) must still refuse all of them
    policy = DockerPolicy(data_roots=("/",))
    for text in _forms(flag, value):
        error = refused(text, policy)
        assert error.field == flag, text
        assert f": {flag}: " in str(error), str(error)
        assert "not allowed" in str(error), str(error)
        # also in the middle of otherwise valid options
        error = refused(f"-e A=1 {text} --cpus 1", policy)
        assert error.field == flag


@pytest.mark.parametrize("flag", REFUSED_ALONE)
def test_refused_switches_name_the_flag(flag: str) -> None:
    for text in (flag, f"{flag}=true", f"-e A=1 {flag} -m 1g"):
        if text.endswith("=true") and not flag.startswith("--"):
            continue
        error = refused(text)
        assert error.field == flag, text
        assert str(error).startswith(f"app_docker_args: {flag}: not allowed"), str(error)


def test_reasons_are_given_for_the_dangerous_ones() -> None:
    assert "PID namespace" in str(refused("--pid=host"))
    assert "(--pid host)" in str(refused("--pid host"))
    assert "capabilities" in str(refused("--cap-add=SYS_ADMIN"))
    assert "unconfined" in str(refused("--security-opt apparmor=unconfined"))
    assert "ports" in str(refused("-p 80:80"))
    assert "-e KEY=VALUE" in str(refused("--env-file=.env"))
    assert "another container's volumes" in str(refused("--volumes-from x"))
    # a switch's reason does not show the next word as its value
    assert "(--rm" not in str(refused("--rm -e A=1"))


@pytest.mark.parametrize("text", ["-it", "-ti", "-dit", "-itd", "-Pd", "-xyz"])
def test_combined_short_flags_are_refused(text: str) -> None:
    error = refused(f"{text} -e A=1")
    assert error.field == text
    assert "run together" in str(error)


@pytest.mark.parametrize("text", ["--foo", "--foo=bar", "-x", "---privileged", "--Privileged", "--pid-host"])
def test_unknown_options_list_what_is_allowed(text: str) -> None:
    error = refused(text)
    assert error.field == text.partition("=")[0]
    assert "unknown option" in str(error) and "-e/--env" in str(error) and "--network none" in str(error)


def test_known_but_unlisted_options_list_what_is_allowed() -> None:
    error = refused("--shm-size 1g")
    assert "not allowed: only these options may be given: -e/--env" in str(error)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("-privileged", "-privileged", "every capability"),
        ("-net=host", "-net=host", "write --net"),
        ("-pid=host", "-pid=host", "PID namespace"),
        ("-env=A=1", "-env=A=1", "write --env"),
        ("-volume=/:/h", "-volume=/:/h", "write --volume"),
    ],
)
def test_single_dash_long_options(text: str, field: str, message: str) -> None:
    error = refused(text)
    assert error.field == field and message in str(error)


# ----------------------------------------------------------------------------------------------------------
# Positional arguments, values and quoting


@pytest.mark.parametrize(
    "text", ["waggle/objcounter:0.0.0", "-e A=1 myimage", "--runtime nvidia image --use-gpu", "-", "bash -c id"]
)
def test_positional_arguments_are_refused(text: str) -> None:
    error = refused(text)
    assert "app_args" in str(error) and "app_name" in str(error)


def test_double_dash_is_refused() -> None:
    error = refused("-e A=1 -- --use-gpu")
    assert error.field == "--" and "app_args" in str(error)


@pytest.mark.parametrize(
    ("text", "field"),
    [("-e", "-e"), ("--env", "--env"), ("-m 1g --memory", "--memory"), ("--runtime", "--runtime"), ("-v", "-v")],
)
def test_missing_values(text: str, field: str) -> None:
    error = refused(text)
    assert error.field == field and "needs a value" in str(error)


@pytest.mark.parametrize("text", ["-v --privileged", "-e --pid=host", "--network --net=host", "-m -1"])
def test_an_option_is_never_taken_as_a_value(text: str) -> None:
    error = refused(text)
    assert "needs a value" in str(error) and "the next word is the option" in str(error)


@pytest.mark.parametrize("text", ["-e 'A=1", '-e "A=1', "-e A='x\"", "-e A=1\\"])
def test_unbalanced_quotes(text: str) -> None:
    error = refused(text)
    assert "unbalanced quotes" in str(error) or "trailing backslash" in str(error)


def test_nul_characters_are_refused() -> None:
    assert "NUL" in str(refused("-e A=\0"))


def test_too_long_text_is_refused() -> None:
    assert "longer than" in str(refused("-e A=" + "x" * MAX_DOCKER_ARGS_CHARS))


def test_a_non_string_is_refused_and_never_read_from_stdin() -> None:
    with pytest.raises(SpecError, match="expected the docker options as a string"):
        parse_docker_args(None, DockerPolicy())  # type: ignore[arg-type]


def test_everything_together(home: Path, policy: DockerPolicy) -> None:
    text = (
        f"--runtime nvidia -e 'MODEL=yolo v5' --env=LEVEL=2 -v {home}/luke_projects/config_dir/data-config.json:"
        "/run/waggle/data-config.json --network none --device /dev/video0 -m 2g --cpus 1.5 --pids-limit 200"
    )
    options, limits = parse(text, policy)
    assert options == DockerOptions(
        env={"MODEL": "yolo v5", "LEVEL": "2"},
        data_mounts=(
            (str(home / "luke_projects" / "config_dir" / "data-config.json"), "/run/waggle/data-config.json"),
        ),
        runtime="nvidia",
        network="none",
        devices=("/dev/video0",),
    )
    assert limits == Limits(memory_bytes=2 * GiB, cpus=1.5, pids=200)


# ----------------------------------------------------------------------------------------------------------
# The agent's policy from its environment


def test_policy_from_an_empty_environment() -> None:
    assert DockerPolicy.from_env({}) == DockerPolicy()
    assert DockerPolicy.from_env({"WAAP_DATA_ROOTS": "", "WAAP_MAX_MEMORY": " "}) == DockerPolicy()


def test_policy_from_env() -> None:
    environ = {
        "WAAP_DATA_ROOTS": "/home/nvidia:/media/data/::/home/nvidia",
        "WAAP_MAX_MEMORY": "8g",
        "WAAP_MAX_CPUS": "4",
        "WAAP_MAX_PIDS": "1024",
        "WAAP_DEVICES": "/dev/video0:/dev/video1",
        "WAAP_NVIDIA_RUNTIME": "0",
    }
    assert DockerPolicy.from_env(environ) == DockerPolicy(
        data_roots=("/home/nvidia", "/media/data"),
        max_memory_bytes=8 * GiB,
        max_cpus=4.0,
        max_pids=1024,
        devices=("/dev/video0", "/dev/video1"),
        nvidia_runtime=False,
    )
    assert DockerPolicy.from_env({"WAAP_MAX_MEMORY": "8589934592"}).max_memory_bytes == 8 * GiB


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "TRUE"])
def test_policy_nvidia_on(value: str) -> None:
    assert DockerPolicy.from_env({"WAAP_NVIDIA_RUNTIME": value}).nvidia_runtime


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WAAP_DATA_ROOTS", "relative/path"),
        ("WAAP_DATA_ROOTS", "/home/nvidia:data"),
        ("WAAP_DATA_ROOTS", "/home/../etc"),
        ("WAAP_DATA_ROOTS", "/"),
        ("WAAP_DATA_ROOTS", "/etc"),
        ("WAAP_DATA_ROOTS", "/var"),
        ("WAAP_DATA_ROOTS", "/home/nvidia:/var/run"),
        ("WAAP_MAX_MEMORY", "lots"),
        ("WAAP_MAX_MEMORY", "1m"),
        ("WAAP_MAX_CPUS", "0"),
        ("WAAP_MAX_CPUS", "four"),
        ("WAAP_MAX_CPUS", "nan"),
        ("WAAP_MAX_PIDS", "0"),
        ("WAAP_MAX_PIDS", "1.5"),
        ("WAAP_DEVICES", "video0"),
        ("WAAP_DEVICES", "/etc/passwd"),
        ("WAAP_DEVICES", "/dev/../etc/shadow"),
        ("WAAP_NVIDIA_RUNTIME", "maybe"),
    ],
)
def test_policy_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SpecError) as info:
        DockerPolicy.from_env({name: value})
    assert info.value.field == name
    assert str(info.value).startswith(f"agent environment: {name}: ")


# ----------------------------------------------------------------------------------------------------------
# A little fuzzing: random sequences of dangerous tokens never let anything dangerous through


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _assert_safe(options: DockerOptions, limits: Limits, policy: DockerPolicy, roots: List[str]) -> None:
    for host, target in options.data_mounts:
        assert host == os.path.realpath(host)
        assert any(_inside(host, root) for root in roots), host
        assert "docker.sock" not in host
        for denied in DENIED_HOST_PATHS:
            assert not (denied != "/" and _inside(host, denied)), host
            assert not _inside(denied, host), host
        assert target.startswith("/") and target != "/"
        assert not any(_inside(target, p) for p in ("/proc", "/sys", "/dev"))
    assert options.network in ("run", "none")
    assert options.runtime in (None, "nvidia")
    assert set(options.devices) <= set(policy.devices)
    assert not any(key.startswith("NVIDIA_") for key in options.env)
    if limits.memory_bytes is not None:
        assert MIN_MEMORY_BYTES <= limits.memory_bytes <= (policy.max_memory_bytes or limits.memory_bytes)
    if limits.cpus is not None:
        assert 0 < limits.cpus <= (policy.max_cpus or limits.cpus)
    if limits.pids is not None:
        assert 1 <= limits.pids <= (policy.max_pids or limits.pids)


def test_fuzz_dangerous_token_sequences(tmp_path: Path, home: Path) -> None:
    (home / "etc").symlink_to("/etc")
    (home / "sock").symlink_to("/var/run/docker.sock")
    outside = tmp_path.resolve() / "outside"
    outside.mkdir()
    (home / "out").symlink_to(outside)
    # a misconfigured policy: a data root that holds the system folders must change nothing
    policy = DockerPolicy(
        data_roots=(str(home), "/"), devices=("/dev/video0",), max_memory_bytes=4 * GiB, max_cpus=2.0, max_pids=64
    )
    roots = [str(home), "/"]
    h = str(home)
    values = [
        "host", "container:abc", "bridge", "none", "nvidia", "runc", "/dev/sda", "/dev/video0", "/dev/mem",
        "/:/host", "/etc:/etc", "/etc:/etc:ro", "/proc:/p", "/sys:/s", "/dev:/dev", "/boot:/b", "//etc:/e",
        "/var/run/docker.sock:/var/run/docker.sock", "/run/docker.sock:/s", "/var/run:/r", "/var:/v", "/run:/r",
        f"{h}/etc:/x", f"{h}/etc/passwd:/x:ro", f"{h}/sock:/s", f"{h}/out:/o", f"{h}/data/../../..:/x",
        f"{h}/data:/data", f"{h}/data:/data:rw", f"{h}/data:/proc", f"{h}:/", f"{h}/data:/data:ro",
        "A=1", "HOME", "NVIDIA_VISIBLE_DEVICES=all", "PATH=/x", "1g", "100g", "5m", "2", "64", "1000", "0", "-1",
        "SYS_ADMIN", "seccomp=unconfined", "type=bind,src=/,dst=/h", "8080:80", "always", "/etc/passwd", "0:0",
        "myimage", "--", "'", '"', "\\", "=", ":", "container:", "/dev/video0:/dev/video0:rwm", "/dev/video0:/dev/sda",
    ]  # fmt: skip
    flags = [
        "--privileged", "--pid", "--net", "--network", "--ipc", "--userns", "--uts", "--volumes-from", "-v",
        "--volume", "--device", "--runtime", "-e", "--env", "--env-file", "--mount", "--cap-add", "--security-opt",
        "-p", "-P", "--restart", "-m", "--memory", "--memory-swap", "--cpus", "--pids-limit", "--user", "-u", "-it",
        "--group-add", "--sysctl", "--entrypoint", "--gpus", "--device-cgroup-rule", "--rm", "-d",
    ]  # fmt: skip
    good = [
        ("-v", f"{h}/data:/data"), ("--volume", f"{h}/data/frames.bin:/f:ro"), ("-e", "A=1"), ("--env", "B="),
        ("--device", "/dev/video0"), ("--runtime", "nvidia"), ("--network", "none"), ("-m", "1g"), ("--cpus", "2"),
    ]  # fmt: skip
    rng = random.Random(20240229)
    outcomes: Dict[str, int] = {"accepted": 0, "refused": 0}
    for _ in range(4000):
        words: List[str] = []
        for _ in range(rng.randint(1, 5)):
            # half of the pairs are allowed options, so that some sequences pass and get checked
            flag, value = rng.choice(good) if rng.random() < 0.5 else (rng.choice(flags), rng.choice(values))
            style = rng.random()
            if style < 0.4:
                words += [flag, shlex.quote(value)]
            elif style < 0.7:
                words.append(shlex.quote(f"{flag}={value}"))
            elif style < 0.8 and not flag.startswith("--"):
                words.append(shlex.quote(f"{flag}{value}"))
            elif style < 0.9:
                words.append(rng.choice(flags))
            else:
                words.append(rng.choice(values))  # raw: quotes and backslashes unescaped on purpose
        text = " ".join(words)
        try:
            options, limits = parse_docker_args(text, policy)
        except SpecError as error:
            assert str(error).startswith("app_docker_args"), text
            outcomes["refused"] += 1
            continue
        _assert_safe(options, limits, policy, roots)
        outcomes["accepted"] += 1
    assert outcomes["accepted"] > 300 and outcomes["refused"] > 1000, outcomes


def test_fuzz_random_characters_only_ever_raise_spec_error(home: Path, policy: DockerPolicy) -> None:
    rng = random.Random(7)
    alphabet = ["-", "--", "e", "v", "m", "=", ":", "/", " ", "'", '"', "\\", "A", "1", "g", "ro", "etc", str(home)]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        try:
            options, limits = parse_docker_args(text, policy)
        except SpecError:
            continue
        _assert_safe(options, limits, policy, [str(home)])
