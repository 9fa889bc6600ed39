"""Tests for ``profiler.spec``: YAML or CLI values in, a validated Profile or a located SpecError out."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest
import yaml

from profiler import spec
from profiler.errors import SpecError
from profiler.profile import DEFAULT_GRACE_S, DEFAULT_INTERVAL_S, KNOWN_METRICS, Limits, Profile, Target
from profiler.spec import MAX_SPEC_BYTES, load_profile, parse_profile, profile_from_args, split_args

DATA = Path(__file__).parent / "data" / "spec"

# The smallest valid standalone profile; error cases append or replace one line.
MINIMAL = "image: waggle/objcounter:0.0.0\ntargets:\n  - {args: --use-cpu, timeout: 10}\n"


def parse(text: str, image: Optional[str] = None) -> Profile:
    return parse_profile(text, source="test.yaml", image=image)


def spec_error(text: str, image: Optional[str] = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, image=image)
    return info.value


# ----------------------------------------------------------------------------------------------------------
# Accepted shapes


def test_seed_sage_yaml_loads_as_written() -> None:
    profile = load_profile(DATA / "sage.yaml")

    assert profile.image == "waggle/objcounter:0.0.0"
    assert profile.targets == (
        Target(args=("-interval", "1", "--use-gpu"), timeout_s=120.0, env={}, name="target1"),
        Target(args=("--use-gpu",), timeout_s=60.0, env={}, name="target2"),
        Target(args=("--use-cpu",), timeout_s=0.0, env={}, name="target3"),
    )
    assert profile.metrics == ("system", "gpu-summary")
    assert profile.interval_s == DEFAULT_INTERVAL_S
    assert profile.repeat == 1
    assert profile.grace_s == DEFAULT_GRACE_S
    assert profile.limits == Limits()
    assert profile.source == str(DATA / "sage.yaml")
    assert all(isinstance(arg, str) for target in profile.targets for arg in target.args)


def test_design_section_needs_an_image_and_takes_one() -> None:
    path = DATA / "design-section.yaml"
    with pytest.raises(SpecError) as info:
        load_profile(path)
    assert info.value.field == "profiling.image"
    assert "no 'namespace'" in str(info.value)
    assert "--image" in str(info.value)

    profile = load_profile(path, image="waggle/objcounter:0.0.0")
    assert profile.image == "waggle/objcounter:0.0.0"
    assert [t.args for t in profile.targets] == [("-interval", "1", "--use-gpu"), ("--use-cpu",)]
    assert [t.timeout_s for t in profile.targets] == [120.0, 0.0]


def test_image_precedence_argument_then_profiling_image_then_sage_fields() -> None:
    text = (DATA / "sage.yaml").read_text()
    with_image = text.replace("profiling:\n", "profiling:\n  image: registry.local:5000/me/objcounter:dev\n")
    assert parse(with_image).image == "registry.local:5000/me/objcounter:dev"
    assert parse(with_image, image="other/app:1").image == "other/app:1"
    assert parse(text, image="other/app@sha256:" + "a" * 64).image == "other/app@sha256:" + "a" * 64


def test_standalone_profile_with_every_key() -> None:
    profile = load_profile(DATA / "standalone.yaml")

    assert profile.image == "127.0.0.1:5000/waap/demo:1"
    gpu, cpu = profile.targets
    assert gpu == Target(
        args=("-interval", "1", "--use-gpu", "--label", "two words"),
        timeout_s=120.0,
        env={"MODE": "gpu", "BATCH": "8"},
        name="gpu",
    )
    # List-form args are taken verbatim: no splitting, no shell expansion.
    assert cpu.args == ("--use-cpu", "--label", "two words", "$HOME; rm -rf /")
    assert cpu.timeout_s == 30.5
    assert profile.metrics == ("system", "container")  # duplicate dropped, order kept
    assert profile.interval_s == 0.05
    assert profile.repeat == 3
    assert profile.env == {"LOG_LEVEL": "debug", "THRESHOLD": "0.5"}
    assert profile.grace_s == 5.0
    assert profile.limits == Limits(memory_bytes=512 * 1024**2, cpus=1.5, pids=256)
    assert profile.target_env(gpu) == {"LOG_LEVEL": "debug", "THRESHOLD": "0.5", "MODE": "gpu", "BATCH": "8"}


def test_image_argument_overrides_standalone_image() -> None:
    assert parse(MINIMAL, image="localhost:5000/x/y:2").image == "localhost:5000/x/y:2"


def test_string_args_are_split_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    profile = parse(f'image: a\ntargets:\n  - args: "$(touch {marker}) `id` ; echo \'a b\' \\"c\\""\n')
    assert profile.targets[0].args == ("$(touch", f"{marker})", "`id`", ";", "echo", "a b", "c")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("1.5", 1.5),
        ('"90s"', 90.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ('"45"', 45.0),
    ],
)
def test_timeout_accepts_numbers_and_duration_strings(value: str, seconds: float) -> None:
    profile = parse(f"image: a\ntargets:\n  - timeout: {value}\n")
    assert profile.targets[0].timeout_s == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("64m", 64 * 2**20),
        ("1g", 2**30),
        ("1GiB", 2**30),
        ("512mb", 512 * 2**20),
        ("6291456", 6 * 2**20),
        ("8388608", 8 * 2**20),
        ('"1.5g"', int(1.5 * 2**30)),
        ("7000k", 7000 * 1024),
    ],
)
def test_memory_sizes(value: str, size: int) -> None:
    assert parse(MINIMAL + f"limits: {{memory: {value}}}\n").limits.memory_bytes == size


def test_defaults_and_target_names() -> None:
    profile = parse("image: a\ntargets:\n  - {}\n  - {name: second}\n  - {}\n")
    assert [t.name for t in profile.targets] == ["target1", "second", "target3"]
    assert profile.targets[0] == Target(args=(), timeout_s=0.0, env={}, name="target1")
    assert profile.metrics == ("system", "container", "custom")
    assert profile.source == "test.yaml"


def test_metrics_as_comma_separated_string() -> None:
    assert parse(MINIMAL + "metrics: system, gpu-summary\n").metrics == ("system", "gpu-summary")


def test_every_known_metric_is_accepted() -> None:
    assert parse(MINIMAL + f"metrics: {list(KNOWN_METRICS)}\n").metrics == KNOWN_METRICS


@pytest.mark.parametrize(
    "image",
    [
        "alpine",
        "waggle/objcounter:0.0.0",
        "127.0.0.1:5000/waap/demo:1",
        "localhost/a/b",
        "[::1]:5000/a:latest",
        "registry.example.com/a/b_c__d-e.f:v1.2-rc_3",
        "a@sha256:" + "0" * 64,
        "a:1@sha256:" + "f" * 64,
    ],
)
def test_valid_image_references(image: str) -> None:
    assert parse(MINIMAL, image=image).image == image


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("", "empty"),
        ("a b", "whitespace"),
        ("Waggle/app", "lowercase"),
        ("a:-x", "tag"),
        ("a@sha256:xyz", "digest"),
        ("a//b", "name component"),
        ("bad_host:99999x/a", "registry"),
        ("-a", "name component"),
        (":1", "empty"),
    ],
)
def test_invalid_image_references(image: str, reason: str) -> None:
    error = spec_error(MINIMAL, image=image)
    assert error.field == "image"
    assert reason in error.reason


def test_sage_yaml_other_keys_are_ignored_but_values_still_safe() -> None:
    text = (DATA / "sage.yaml").read_text() + "whatever: {nested: [1, 2]}\nauthors: '@me'\n"
    assert parse(text).image == "waggle/objcounter:0.0.0"


# ----------------------------------------------------------------------------------------------------------
# Refused input: each names the line and the field


@pytest.mark.parametrize(
    ("text", "line", "field", "fragments"),
    [
        pytest.param("image: a\ntargets: [\n", 3, "", ["invalid YAML"], id="syntax-error"),
        pytest.param("image: a\ntargets:\n  - {args: x\n  - y\n", 5, "", ["invalid YAML"], id="syntax-flow"),
        pytest.param("- image: a\n", 1, "", ["mapping at the top level", "got a list"], id="top-list"),
        pytest.param("just text\n", 1, "", ["mapping at the top level", "string 'just text'"], id="top-scalar"),
        pytest.param("# nothing\n", 1, "", ["empty"], id="empty"),
        pytest.param(
            "image: a\ntargets: {args: x}\n",
            2,
            "targets",
            ["non-empty list", "got a mapping"],
            id="targets-mapping",
        ),
        pytest.param("image: a\ntargets: []\n", 2, "targets", ["empty list"], id="targets-empty"),
        pytest.param("image: a\n", 1, "targets", ["missing"], id="targets-missing"),
        pytest.param("targets: [{}]\n", 1, "image", ["no image"], id="image-missing"),
        pytest.param("image: 5\ntargets: [{}]\n", 1, "image", ["Docker image reference", "integer 5"], id="image-int"),
        pytest.param(
            "image: a\ntargets:\n  - --use-gpu\n",
            3,
            "targets[0]",
            ["target mapping", "write it as"],
            id="target-string",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {timeout: -5}\n",
            3,
            "targets[0].timeout",
            [">= 0", "integer -5"],
            id="timeout-negative",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {timeout: abc}\n",
            3,
            "targets[0].timeout",
            ["number of seconds", "string 'abc'"],
            id="timeout-abc",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {timeout: true}\n",
            3,
            "targets[0].timeout",
            ["number of seconds", "boolean true"],
            id="timeout-bool",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {timeout: [1]}\n",
            3,
            "targets[0].timeout",
            ["got a list"],
            id="timeout-list",
        ),
        pytest.param("image: a\ntargets:\n  - {timeout: .nan}\n", 3, "targets[0].timeout", ["nan"], id="timeout-nan"),
        pytest.param("image: a\ntargets:\n  - {timeout: .inf}\n", 3, "targets[0].timeout", ["inf"], id="timeout-inf"),
        pytest.param(
            'image: a\ntargets:\n  - {}\n  - args: "--label \'x"\n',
            4,
            "targets[1].args",
            ["unbalanced quotes in args", "--label 'x"],
            id="args-unbalanced",
        ),
        pytest.param(
            "image: a\ntargets:\n  - args: [--a, {b: 1}]\n",
            3,
            "targets[0].args[1]",
            ["string or number", "got a mapping"],
            id="args-item-mapping",
        ),
        pytest.param(
            "image: a\ntargets:\n  - args: 5\n",
            3,
            "targets[0].args",
            ["list of strings", "integer 5"],
            id="args-int",
        ),
        pytest.param(
            "image: a\ntargets:\n  - timout: 5\n",
            3,
            "targets[0].timout",
            ["unknown key 'timout'", "did you mean 'timeout'?", "args, timeout, env"],
            id="target-typo",
        ),
        pytest.param(
            MINIMAL + "intervall: 2\n",
            4,
            "intervall",
            ["unknown key 'intervall'", "did you mean 'interval'?"],
            id="top-typo",
        ),
        pytest.param(
            MINIMAL + "limits: {memroy: 64m}\n",
            4,
            "limits.memroy",
            ["did you mean 'memory'?", "memory, cpus, pids"],
            id="limits-typo",
        ),
        pytest.param(
            MINIMAL + "metrics: [system, gpu_summary]\n",
            4,
            "metrics[1]",
            ["unknown metric 'gpu_summary'", "did you mean 'gpu-summary'?", ", ".join(KNOWN_METRICS)],
            id="metric-unknown",
        ),
        pytest.param(
            MINIMAL + "metrics:\n  - system\n  - 3\n",
            6,
            "metrics[1]",
            ["metric name", "integer 3"],
            id="metric-int",
        ),
        pytest.param(MINIMAL + "metrics: []\n", 4, "metrics", ["at least one metric"], id="metrics-empty"),
        pytest.param(MINIMAL + "image: b\n", 4, "image", ["duplicate key 'image'", "line 1"], id="duplicate-key"),
        pytest.param(
            "image: a\ntargets:\n  - args: x\n    timeout: 1\n    args: y\n",
            5,
            "targets[0].args",
            ["duplicate key 'args'", "line 3"],
            id="duplicate-key-nested",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {name: x}\n  - {name: x}\n",
            4,
            "targets[1].name",
            ["duplicate target name 'x'"],
            id="duplicate-target-name",
        ),
        pytest.param(
            "image: a\ntargets:\n  - {name: 'a/b'}\n",
            3,
            "targets[0].name",
            ["name of letters"],
            id="target-name-slash",
        ),
        pytest.param(
            MINIMAL + "env:\n  GOOD: 1\n  1BAD: x\n",
            6,
            "env.1BAD",
            ["environment variable name", "'1BAD'"],
            id="env-bad-name",
        ),
        pytest.param(
            "image: a\ntargets:\n  - env: {MY-VAR: x}\n",
            3,
            "targets[0].env.MY-VAR",
            ["environment variable name"],
            id="target-env-bad-name",
        ),
        pytest.param(MINIMAL + "env: {DEBUG: yes}\n", 4, "env.DEBUG", ["boolean true", "quote"], id="env-bool"),
        pytest.param(MINIMAL + "env: {A: [1]}\n", 4, "env.A", ["got a list"], id="env-list"),
        pytest.param(MINIMAL + "env: [A=1]\n", 4, "env", ["mapping of environment", "got a list"], id="env-list"),
        pytest.param(MINIMAL + "env:\n", 4, "env", ["nothing (null)"], id="env-null"),
        pytest.param(MINIMAL + "interval: 0\n", 4, "interval", ["> 0", "integer 0"], id="interval-zero"),
        pytest.param(MINIMAL + "interval: 3601\n", 4, "interval", ["<= 3600"], id="interval-too-big"),
        pytest.param(MINIMAL + "repeat: 0\n", 4, "repeat", ["1 to 1000"], id="repeat-zero"),
        pytest.param(MINIMAL + "repeat: 1001\n", 4, "repeat", ["1 to 1000"], id="repeat-too-big"),
        pytest.param(MINIMAL + "repeat: 2.5\n", 4, "repeat", ["integer", "number 2.5"], id="repeat-float"),
        pytest.param(MINIMAL + "repeat: true\n", 4, "repeat", ["boolean"], id="repeat-bool"),
        pytest.param(MINIMAL + "grace: -1\n", 4, "grace", [">= 0"], id="grace-negative"),
        pytest.param(
            MINIMAL + "limits:\n  memory: lots\n",
            5,
            "limits.memory",
            ['"64m"', "string 'lots'"],
            id="memory-word",
        ),
        pytest.param(
            MINIMAL + "limits:\n  memory: 1m\n",
            5,
            "limits.memory",
            ["6 MiB", "1048576 bytes"],
            id="memory-too-small",
        ),
        pytest.param(MINIMAL + "limits:\n  memory: 1.5\n", 5, "limits.memory", ["number 1.5"], id="memory-float"),
        pytest.param(MINIMAL + "limits:\n  cpus: 0\n", 5, "limits.cpus", ["> 0"], id="cpus-zero"),
        pytest.param(MINIMAL + "limits:\n  pids: 0\n", 5, "limits.pids", [">= 1"], id="pids-zero"),
        pytest.param(
            MINIMAL + "limits: 64m\n",
            4,
            "limits",
            ["mapping with keys memory, cpus, pids"],
            id="limits-string",
        ),
        pytest.param(MINIMAL + "1: x\n", 4, "1", ["keys must be strings", "integer 1"], id="int-key"),
        pytest.param(MINIMAL + "x: !!binary 'not base64!'\n", 4, "x", ["base64"], id="bad-binary"),
        pytest.param(MINIMAL + "x: 2023-02-30\n", 4, "x", ["invalid value", "day is out of range"], id="bad-date"),
        pytest.param(MINIMAL + "<<: {repeat: 2}\n", 4, "<<", ["merge keys"], id="merge-key"),
        pytest.param(MINIMAL + "x: !custom 1\n", 4, "x", ["YAML tag '!custom' is not allowed"], id="custom-tag"),
    ],
)
def test_refused_input_names_line_and_field(text: str, line: int, field: str, fragments: List[str]) -> None:
    error = spec_error(text)
    assert error.source == "test.yaml"
    assert (error.line, error.field) == (line, field), str(error)
    for fragment in fragments:
        assert fragment in str(error)
    assert str(error).startswith(f"test.yaml:{line}: ")


def test_error_fields_in_sage_yaml_start_with_profiling() -> None:
    text = (DATA / "sage.yaml").read_text().replace("timeout: 60", "timeout: -60")
    error = spec_error(text)
    assert (error.line, error.field) == (19, "profiling.targets[1].timeout")
    assert str(error).startswith("test.yaml:19: profiling.targets[1].timeout: expected a number of seconds >= 0")


def test_unknown_key_in_profiling_section() -> None:
    text = (DATA / "sage.yaml").read_text().replace("  metrics:", "  metric:")
    error = spec_error(text)
    assert (error.line, error.field) == (21, "profiling.metric")
    assert "did you mean 'metrics'?" in str(error)


def test_sage_yaml_without_profiling_section() -> None:
    with pytest.raises(SpecError) as info:
        load_profile(DATA / "sage-no-profiling.yaml")
    assert info.value.field == "profiling"
    assert "no 'profiling:' section" in str(info.value)
    assert "ECR sage.yaml" in str(info.value)


def test_misspelt_profiling_section_is_pointed_out() -> None:
    error = spec_error("name: a\nnamespace: b\nversion: '1'\nprofilng:\n  targets: [{}]\n")
    assert "'profilng' a misspelling of 'profiling'" in str(error)


def test_unquoted_float_version_cannot_make_an_image() -> None:
    error = spec_error("name: app\nnamespace: me\nversion: 1.10\nprofiling:\n  targets: [{}]\n")
    assert (error.line, error.field) == (3, "version")
    assert "quote it" in str(error)


def test_uppercase_sage_name_makes_an_invalid_image() -> None:
    error = spec_error("name: App\nnamespace: me\nversion: '1'\nprofiling:\n  targets: [{}]\n")
    assert (error.line, error.field) == (1, "name")
    assert "'me/App:1'" in str(error)
    assert "profiling.image" in str(error)


def test_profiling_section_must_be_a_mapping() -> None:
    error = spec_error("name: a\nprofiling: [targets]\n")
    assert (error.line, error.field) == (2, "profiling")
    assert "got a list" in str(error)


# ----------------------------------------------------------------------------------------------------------
# Hostile files


def test_oversized_file_is_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# padding\n" * (1024 * 1024))  # 10 MiB of valid YAML
    read_sizes: List[int] = []
    real_open = Path.open

    def recording_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        real_read = handle.read

        def read(size: int = -1) -> Any:
            read_sizes.append(size)
            return real_read(size)

        handle.read = read
        return handle

    def no_parsing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the oversized file was parsed")

    monkeypatch.setattr(Path, "open", recording_open)
    monkeypatch.setattr(spec, "_load_yaml", no_parsing)
    with pytest.raises(SpecError) as info:
        load_profile(path)
    assert info.value.source == str(path)
    assert "larger than" in str(info.value)
    assert str(MAX_SPEC_BYTES) in str(info.value)
    assert read_sizes == [MAX_SPEC_BYTES + 1]


def test_oversized_text_is_refused_and_cap_is_adjustable(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="larger than"):
        parse_profile("#" * (MAX_SPEC_BYTES + 1), source="big")
    with pytest.raises(SpecError, match="larger than"):
        parse_profile("é" * (MAX_SPEC_BYTES // 2 + 1), source="big")  # 2 bytes each in UTF-8
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(SpecError, match="larger than the 20-byte limit"):
        load_profile(path, max_bytes=20)
    assert load_profile(path, max_bytes=len(MINIMAL)).image == "waggle/objcounter:0.0.0"


def test_python_tag_is_refused_and_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    calls: List[Any] = []

    def fake_system(*args: Any) -> int:
        calls.append(args)
        return 0

    monkeypatch.setattr(os, "system", fake_system)
    text = MINIMAL + f'x: !!python/object/apply:os.system ["touch {marker}"]\n'
    error = spec_error(text)
    assert (error.line, error.field) == (4, "x")
    assert "python/object/apply:os.system" in str(error)
    assert "not allowed" in str(error)
    assert calls == []
    assert not marker.exists()
    # Plain yaml.load with the unsafe loader would have called os.system: the test is a real one.
    yaml.load(text, Loader=yaml.UnsafeLoader)
    assert calls == [(f"touch {marker}",)]


@pytest.mark.parametrize("tag", ["!!python/object:os.system", "!!python/name:os.system", "!!python/module:os"])
def test_other_python_tags_are_refused(tag: str) -> None:
    error = spec_error(MINIMAL + f"x: {tag} {{}}\n")
    assert "not allowed" in str(error)
    assert error.line == 4


def test_alias_bomb_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        load_profile(DATA / "alias-bomb.yaml")
    assert time.monotonic() - started < 1.0
    assert "YAML aliases/anchors are not allowed" in str(info.value)
    assert (info.value.line, info.value.field) == (5, "a")


def test_a_single_alias_is_refused_too() -> None:
    error = spec_error("image: &img waggle/app:1\ntargets: [{}]\nx: *img\n")
    assert (error.line, error.field) == (1, "image")
    assert "aliases/anchors" in str(error)


def test_safe_loader_is_left_alone() -> None:
    assert yaml.SafeLoader.yaml_constructors["tag:yaml.org,2002:map"] is not spec._construct_map
    assert type(yaml.safe_load("a: 1")) is dict
    assert yaml.safe_load("a: &x 1\nb: *x") == {"a": 1, "b": 1}


def test_missing_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the profile") as info:
        load_profile(tmp_path / "absent.yaml")
    assert info.value.source == str(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="cannot read the profile"):
        load_profile(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"image: a\ntargets: [{}]\n# caf\xe9\n")
    with pytest.raises(SpecError, match="not valid UTF-8") as info:
        load_profile(latin1)
    assert info.value.line == 3


def test_utf8_bom_and_string_path_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_profile(str(path)).source == str(path)


@pytest.mark.parametrize(
    "text",
    [
        "\x00",
        "image: a\x07",
        "[" * 5000,
        "{" * 200000,
        "a: " + "9" * 5000,
        "? [1, 2]\n: x",
        "?\n",
        ":",
        "---\n---",
        "%YAML 9.9\n--- a",
        "!!set {a, b}",
        "!!omap [a: 1]",
        "targets: !!set {a}",
        "image: a\ntargets: [!!str 1]",
        "image: !!binary aGk=\ntargets: [{}]",
        "\t- a",
        "a: 'unterminated",
        'a: "\\x"',
        "a: b: c",
        "- - -",
    ],
)
def test_only_spec_errors_escape(text: str) -> None:
    with pytest.raises(SpecError):
        parse(text)


# ----------------------------------------------------------------------------------------------------------
# split_args


def test_split_args() -> None:
    assert split_args("-interval 1 --use-gpu", where="args") == ("-interval", "1", "--use-gpu")
    assert split_args("  ", where="args") == ()
    assert split_args("--label 'a b' \"c d\" e\\ f # not a comment", where="args") == (
        "--label",
        "a b",
        "c d",
        "e f",
        "#",
        "not",
        "a",
        "comment",
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("--x 'a", "unbalanced quotes in args"),
        ('--x "a', "unbalanced quotes in args"),
        ("--x a\\", "trailing backslash in args"),
    ],
)
def test_split_args_errors(value: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        split_args(value, where="--args", source="cli", line=None)
    assert info.value.field == "--args"
    assert info.value.source == "cli"
    assert message in str(info.value)
    assert repr(value) in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# profile_from_args


def test_profile_from_args_minimal() -> None:
    profile = profile_from_args(image="waggle/objcounter:0.0.0", args="-interval 1 --use-gpu", timeout=30)
    assert profile == Profile(
        image="waggle/objcounter:0.0.0",
        targets=(Target(args=("-interval", "1", "--use-gpu"), timeout_s=30.0, env={}, name="target1"),),
        source="<command line>",
    )


def test_profile_from_args_with_everything_as_strings() -> None:
    profile = profile_from_args(
        image="127.0.0.1:5000/waap/demo:1",
        args=["--label", "two words"],
        timeout="2m",
        env=["A=1", "B=x=y", "C=", "A=2"],
        metrics=["system,gpu-summary", "system"],
        interval="0.05",
        repeat="3",
        grace="5s",
        memory="64m",
        cpus="1.5",
        pids="100",
        source="waap run",
    )
    assert profile.targets == (Target(args=("--label", "two words"), timeout_s=120.0, env={}, name="target1"),)
    assert profile.env == {"A": "2", "B": "x=y", "C": ""}  # later --env wins, as with docker run -e
    assert profile.metrics == ("system", "gpu-summary")
    assert (profile.interval_s, profile.repeat, profile.grace_s) == (0.05, 3, 5.0)
    assert profile.limits == Limits(memory_bytes=64 * 2**20, cpus=1.5, pids=100)
    assert profile.source == "waap run"


def test_profile_from_args_env_mapping() -> None:
    assert profile_from_args(image="a", env={"X": "1"}).env == {"X": "1"}
    assert profile_from_args(image="a", env="X=1").env == {"X": "1"}


@pytest.mark.parametrize(
    ("kwargs", "field", "fragments"),
    [
        ({"image": "Bad Image"}, "--image", ["Docker image reference", "whitespace"]),
        ({"image": ""}, "--image", ["empty"]),
        ({"args": "--x 'y"}, "--args", ["unbalanced quotes in args"]),
        ({"args": ["--x", None]}, "--args", ["nothing (null)"]),
        ({"timeout": "abc"}, "--timeout", ["number of seconds", "string 'abc'"]),
        ({"timeout": -1}, "--timeout", [">= 0", "integer -1"]),
        ({"timeout": True}, "--timeout", ["boolean true"]),
        ({"env": ["NOVALUE"]}, "--env", ["KEY=VALUE", "'NOVALUE'"]),
        ({"env": ["1X=2"]}, "--env", ["environment variable name", "'1X'"]),
        ({"env": {"A-B": "1"}}, "--env", ["environment variable name"]),
        ({"metrics": ["sytem"]}, "--metrics", ["did you mean 'system'?", ", ".join(KNOWN_METRICS)]),
        ({"metrics": []}, "--metrics", ["at least one metric"]),
        ({"interval": "0"}, "--interval", ["> 0"]),
        ({"interval": "1h1s"}, "--interval", ["<= 3600"]),
        ({"repeat": "many"}, "--repeat", ["1 to 1000", "string 'many'"]),
        ({"repeat": 0}, "--repeat", ["1 to 1000"]),
        ({"grace": "-3"}, "--grace", [">= 0"]),
        ({"memory": "2k"}, "--memory", ["6 MiB"]),
        ({"memory": "huge"}, "--memory", ['"64m"']),
        ({"cpus": "0"}, "--cpus", ["> 0"]),
        ({"cpus": "x"}, "--cpus", ["number of CPUs"]),
        ({"pids": "0"}, "--pids", [">= 1"]),
    ],
)
def test_profile_from_args_errors_name_the_option(kwargs: Any, field: str, fragments: List[str]) -> None:
    values = {"image": "waggle/objcounter:0.0.0", **kwargs}
    with pytest.raises(SpecError) as info:
        profile_from_args(**values)
    error = info.value
    assert (error.source, error.line, error.field) == ("<command line>", None, field)
    assert str(error).startswith(f"<command line>: {field}: ")
    for fragment in fragments:
        assert fragment in str(error)


def test_cli_and_file_build_the_same_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("image: waggle/objcounter:0.0.0\ntargets:\n  - {args: '-interval 1', timeout: 30}\n")
    from_file = load_profile(path)
    from_cli = profile_from_args(image="waggle/objcounter:0.0.0", args="-interval 1", timeout="30", source=str(path))
    assert from_file == from_cli


def test_public_api() -> None:
    assert set(spec.__all__) >= {"load_profile", "parse_profile", "profile_from_args", "split_args"}
    assert all(hasattr(spec, name) for name in spec.__all__)


# -- knobs and required collectors ---------------------------------------------------------------------------------
def test_params_merge_profile_and_target_and_required_collectors():
    profile = parse_profile(
        "image: a\n"
        "metrics: [system, container]\n"
        "required: [container]\n"
        "params: {res: 640, model: yolo, fast: true}\n"
        "targets:\n"
        "  - {name: small, params: {res: 320}}\n"
        "  - {name: big}\n",
        source="p.yaml",
    )
    small, big = profile.targets
    assert profile.required == ("container",)
    assert profile.target_params(small) == {"res": 320, "model": "yolo", "fast": True}
    assert profile.target_params(big) == {"res": 640, "model": "yolo", "fast": True}


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("params: {Res: 1}\n", 4, "params.Res", ["knob name"]),
        ("params: {res: [1, 2]}\n", 4, "params.res", ["string, number or boolean"]),
        ("params: {res: .nan}\n", 4, "params.res", ["finite number"]),
        ("params: 3\n", 4, "params", ["mapping of knob names"]),
        ("required: [gpu-summary]\n", 4, "required", ["must also be listed in metrics"]),
        ("required: [bogus]\n", 4, "required[0]", ["unknown metric 'bogus'"]),
    ],
)
def test_bad_params_and_required(text, line, field, words):
    with pytest.raises(SpecError) as info:
        parse_profile("image: a\ntargets:\n  - {args: x}\n" + text, source="p.yaml")
    e = info.value
    assert (e.source, e.line, e.field) == ("p.yaml", line, field), str(e)
    for word in words:
        assert word in str(e)


def test_tools_from_the_command_line():
    assert profile_from_args(image="a", tools="tau").tools == ("tau",)
    assert profile_from_args(image="a", tools="tau,nsys").tools == ("tau", "nsys")
    assert profile_from_args(image="a").tools == ()
    with pytest.raises(SpecError) as info:
        profile_from_args(image="a", tools="tua")
    assert info.value.field == "--tools" and "did you mean 'tau'" in str(info.value)
