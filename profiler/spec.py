"""Profile specs: the edge where user input (YAML files, CLI values) becomes a validated ``Profile``.

Two file shapes are accepted:

* a standalone profile, whose top level holds the profile keys (``image``, ``targets``, ``metrics``, ...);
* an ECR ``sage.yaml``, whose ``profiling:`` section holds them. The ECR's own keys (``name``, ``namespace``,
  ``version``, ``source``, ...) are allowed and ignored, except that ``{namespace}/{name}:{version}`` is the
  default image.

Everything that comes in is untrusted. YAML is read with a private ``SafeLoader`` subclass that refuses
anchors/aliases (no alias bombs), merge keys, duplicate keys and any non-standard tag, and the text is capped
in size before it is parsed. Every mapping the loader builds remembers the line of each key, so that every
error can name the file, the line and the dotted field (``profiling.targets[1].timeout``). Nothing but
``SpecError`` leaves this module for bad input.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from profiler.errors import SpecError
from profiler.profile import (
    DEFAULT_GRACE_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_METRICS,
    KNOWN_METRICS,
    Limits,
    ParamValue,
    Profile,
    Target,
)
from profiler.tools.wrap import KNOWN_TOOLS

__all__ = [
    "MAX_SPEC_BYTES",
    "MIN_MEMORY_BYTES",
    "load_profile",
    "parse_profile",
    "profile_from_args",
    "split_args",
]

# A profile is a few hundred bytes; 1 MiB leaves room for comments and keeps a hostile file cheap to refuse.
MAX_SPEC_BYTES = 1024 * 1024
# Docker refuses a memory limit below 6 MiB; say so here, with the line, rather than at container creation.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
MAX_INTERVAL_S = 3600.0
MAX_REPEAT = 1000

_PROFILE_KEYS: Tuple[str, ...] = (
    "image",
    "targets",
    "metrics",
    "interval",
    "repeat",
    "env",
    "grace",
    "limits",
    "params",
    "required",
    "tools",
)
_TARGET_KEYS: Tuple[str, ...] = ("name", "args", "timeout", "env", "params")
_PARAM_NAME = re.compile(r"[a-z0-9_][a-z0-9_.]{0,127}")
_LIMIT_KEYS: Tuple[str, ...] = ("memory", "cpus", "pids")
# Any of these at the top level means the file is an ECR sage.yaml rather than a standalone profile.
_SAGE_MARKERS = frozenset(
    {
        "name",
        "namespace",
        "version",
        "description",
        "source",
        "inputs",
        "metadata",
        "testing",
        "authors",
        "collaborators",
        "funding",
        "license",
        "keywords",
        "homepage",
        "resources",
        "science_description",
        "images",
    }
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Target names end up in directory names and labels: keep them to a portable, path-safe alphabet.
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_DURATION = re.compile(r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Docker's RAMInBytes syntax: a number, optional binary unit, optional "i" and "b" ("64m", "1GiB", "512kb").
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(?:([kmgtp])i?)?b?", re.IGNORECASE)
_MEMORY_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}

# Docker reference grammar (distribution/reference), checked piece by piece so messages can say which piece.
_DOMAIN = re.compile(
    r"(?:\[[0-9A-Fa-f:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")

_TIMEOUT_EXPECTED = 'a number of seconds >= 0 (0 = no timeout), e.g. 120, 1.5, "90s", "2m", "1h30m"'
_INTERVAL_EXPECTED = f'a number of seconds > 0 and <= {MAX_INTERVAL_S:g}, e.g. 1, 0.05, "500ms"'
_GRACE_EXPECTED = 'a number of seconds >= 0, e.g. 10, "30s"'


# ----------------------------------------------------------------------------------------------------------
# YAML loading


class _Map(Dict[Any, Any]):
    """A YAML mapping that remembers its own line and the line of each key (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: Dict[Any, int] = {}


class _Seq(List[Any]):
    """A YAML sequence that remembers its own line and the line of each item (1-based)."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: List[int] = []


class _Refused(yaml.MarkedYAMLError):
    """YAML a profile may not use (aliases, merge keys, duplicate keys, custom tags, unconvertible values)."""

    def __init__(self, problem: str, mark: Optional[yaml.Mark], field: str = "") -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.field = field


class _SpecLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases and records lines and field paths. Its own class, so that
    adding constructors here never changes ``yaml.SafeLoader`` for the rest of the process."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # The dotted path of each node (``profiling.targets[0]``), so that even errors found while the YAML is
        # still being read can name the field.
        self._path_stack: List[str] = []
        self._node_paths: Dict[int, str] = {}

    def _child_path(self, index: object) -> str:
        base = self._path_stack[-1] if self._path_stack else ""
        if isinstance(index, ScalarNode):  # composing the value of this key
            return f"{base}.{index.value}" if base else str(index.value)
        if isinstance(index, int):  # composing this item of a sequence
            return f"{base}[{index}]"
        return base  # the document itself, or a mapping key

    def compose_node(self, parent: Optional[Node], index: int) -> Optional[Node]:
        path = self._child_path(index)
        # Refuse at the first anchor, before any node is shared: a "billion laughs" file fails at once.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                "YAML aliases/anchors are not allowed in a profile (write the value out in full)",
                event.start_mark,
                path,
            )
        self._path_stack.append(path)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path_stack.pop()
        if node is not None:
            self._node_paths[id(node)] = path
        return node

    def _path(self, node: Node) -> str:
        return self._node_paths.get(id(node), "")

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        # Scalar conversions can fail outside yaml's own error classes (an int too long to convert, a date
        # like 2023-02-30): give them the node's line.
        try:
            return super().construct_object(node, deep=deep)
        except _Refused:
            raise
        except yaml.constructor.ConstructorError as exc:  # e.g. bad !!binary data: add the field
            problem = "; ".join(part for part in (exc.context, exc.problem) if part)
            raise _Refused(f"invalid value: {problem}", exc.problem_mark or node.start_mark, self._path(node)) from None
        except (ValueError, OverflowError, TypeError) as exc:
            raise _Refused(f"invalid value: {exc}", node.start_mark, self._path(node)) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> _Map:
        if not isinstance(node, MappingNode):
            raise _Refused("expected a mapping", node.start_mark, self._path(node))
        result = _Map(node.start_mark.line + 1)
        for key_node, value_node in node.value:
            where = self._path(value_node) or self._path(node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _Refused("YAML merge keys ('<<') are not allowed in a profile", key_node.start_mark, where)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, (list, dict, set)):
                raise _Refused("mapping keys must be plain strings, not lists or mappings", key_node.start_mark, where)
            if key in result:
                raise _Refused(
                    f"duplicate key {key!r} (first given on line {result.key_lines[key]})",
                    key_node.start_mark,
                    where,
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result

    def construct_undefined(self, node: Node) -> NoReturn:
        raise _Refused(
            f"YAML tag {node.tag!r} is not allowed: a profile holds only plain mappings, lists, strings and numbers",
            node.start_mark,
            self._path(node),
        )


def _construct_map(loader: _SpecLoader, node: MappingNode) -> _Map:
    return loader.construct_mapping(node)


def _construct_seq(loader: _SpecLoader, node: SequenceNode) -> _Seq:
    result = _Seq(node.start_mark.line + 1)
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_lines.append(child.start_mark.line + 1)
    return result


# add_constructor copies the table into _SpecLoader on first use, so SafeLoader itself is left untouched.
_SpecLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_SpecLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_SpecLoader.add_constructor(None, _SpecLoader.construct_undefined)


def _mark_line(exc: yaml.MarkedYAMLError) -> Optional[int]:
    mark = exc.problem_mark or exc.context_mark
    return None if mark is None else mark.line + 1


def _load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document with the restricted loader; every failure becomes a SpecError with a line."""
    loader: Optional[_SpecLoader] = None
    try:
        loader = _SpecLoader(text)  # the reader already checks the characters here
        return loader.get_single_data()
    except _Refused as exc:
        line = _mark_line(exc)
        raise SpecError(exc.problem or "refused", source=source, line=line, field=exc.field) from None
    except yaml.MarkedYAMLError as exc:
        detail = "; ".join(part for part in (exc.context, exc.problem) if part)
        raise SpecError(f"invalid YAML: {detail}", source=source, line=_mark_line(exc)) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise SpecError(
            f"invalid YAML: {exc.reason} (character #x{exc.character:04x})", source=source, line=line
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None
    except RecursionError:
        raise SpecError("invalid YAML: nested too deeply", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


# ----------------------------------------------------------------------------------------------------------
# Where a value came from, for messages


@dataclass(frozen=True)
class _At:
    """The place of a value: file (or "<command line>"), 1-based line and dotted field path.

    ``flat`` is for CLI values: an option such as ``--env`` keeps its own name for everything under it.
    """

    source: str
    field: str
    line: Optional[int]
    flat: bool = False

    def key(self, mapping: Any, key: Any) -> _At:
        if self.flat:
            return self
        field = f"{self.field}.{key}" if self.field else str(key)
        line = mapping.key_lines.get(key, self.line) if isinstance(mapping, _Map) else self.line
        return _At(self.source, field, line)

    def item(self, seq: Any, index: int) -> _At:
        if self.flat:
            return self
        line = seq.item_lines[index] if isinstance(seq, _Seq) and index < len(seq.item_lines) else self.line
        return _At(self.source, f"{self.field}[{index}]", line)

    def fail(self, message: str) -> NoReturn:
        raise SpecError(message, source=self.source, line=self.line, field=self.field)

    def expected(self, expectation: str, value: Any) -> NoReturn:
        self.fail(f"expected {expectation}, got {_describe(value)}")


def _describe(value: Any) -> str:
    """Say what a value is, the way a user would recognise it in their file."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 64 else "a very large integer"
        return f"the integer {text}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"


def _suggest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_keys(mapping: Mapping[Any, Any], allowed: Sequence[str], at: _At, hints: Sequence[str] = ()) -> None:
    """Every key must be a known string; the first offender, in file order, is reported."""
    for key in mapping:
        key_at = at.key(mapping, key)
        if not isinstance(key, str):
            key_at.fail(f"keys must be strings, got {_describe(key)}")
        if key not in allowed:
            key_at.fail(
                f"unknown key {key!r}{_suggest(key, [*allowed, *hints])}; expected one of: {', '.join(allowed)}"
            )


def _mapping(value: Any, at: _At, what: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        at.expected(what, value)
    return value


# ----------------------------------------------------------------------------------------------------------
# Scalar fields


def _seconds(value: Any, at: _At, expectation: str, *, positive: bool = False, most: float = math.inf) -> float:
    """A duration: a number (int or float, never a boolean) or a string: "30", "1.5", "90s", "2m", "1h30m"."""
    number = _parse_seconds(value)
    if number is None:
        at.expected(expectation, value)
    if number < 0 or (positive and number == 0) or number > most:
        at.expected(expectation, value)
    return number


def _parse_seconds(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None  # YAML reads yes/no/on/off as booleans: a timeout of "true" seconds is surely a mistake
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        number = float(text)
    elif _DURATION.fullmatch(text):
        number = sum(float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(text))
    else:
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any, at: _At, expectation: str, *, least: int, most: Optional[int] = None) -> int:
    """An integer, or a string of digits (CLI values arrive as strings); floats and booleans are refused."""
    if isinstance(value, bool):
        at.expected(expectation, value)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        at.expected(expectation, value)
    if number < least or (most is not None and number > most):
        at.expected(expectation, value)
    return number


def _positive_float(value: Any, at: _At, expectation: str) -> float:
    number: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = None
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip())
    if number is None or not math.isfinite(number) or number <= 0:
        at.expected(expectation, value)
    return number


def _memory(value: Any, at: _At) -> int:
    """Docker-style memory size ("64m", "1g", "512k", "1GiB") or an integer number of bytes."""
    expectation = 'a memory size like "64m", "1g" or "512k" (binary units), or a number of bytes, at least 6 MiB'
    size: Optional[int] = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        match = _MEMORY.fullmatch(value.strip())
        if match:
            amount, unit = match.group(1), (match.group(2) or "").lower()
            scaled = float(amount) * 1024 ** _MEMORY_POWERS[unit]
            size = int(scaled) if math.isfinite(scaled) else None
    if size is None:
        at.expected(expectation, value)
    if size < MIN_MEMORY_BYTES:
        at.fail(f"expected at least 6 MiB (Docker's minimum memory limit), got {_describe(value)} = {size} bytes")
    return size


def _no_nul(text: str, at: _At, what: str) -> str:
    # An argv entry or environment value cannot carry a NUL byte through exec(); say so here, not at run time.
    if "\0" in text:
        at.fail(f"{what} may not contain NUL characters")
    return text


def _word(value: Any, at: _At, what: str) -> str:
    """An argv entry or env value: strings as they are, numbers written out; booleans and null are refused
    because YAML would have turned the user's yes/no/on/off into true/false behind their back."""
    if isinstance(value, str):
        return _no_nul(value, at, what)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    hint = (
        " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the value)"
        if isinstance(value, bool)
        else ""
    )
    at.fail(f"expected {what} as a string or number, got {_describe(value)}{hint}")


# ----------------------------------------------------------------------------------------------------------
# Composite fields


def split_args(value: str, *, where: str, source: str = "", line: Optional[int] = None) -> Tuple[str, ...]:
    """Split an argument string the way a POSIX shell would (quotes, backslashes), without running any shell.

    ``where`` is the field named in errors (``targets[0].args``, ``--args``); ``source`` and ``line`` say
    where it is.
    """
    at = _At(source, where, line)
    if not isinstance(value, str):
        # shlex.split(None) would read standard input: never let a non-string through.
        at.expected("a string of arguments", value)
    _no_nul(value, at, "args")
    try:
        return tuple(shlex.split(value, comments=False, posix=True))
    except ValueError as exc:
        if "escaped" in str(exc):
            at.fail(f"trailing backslash in args: {value!r}")
        at.fail(f"unbalanced quotes in args: {value!r}")


def _args(value: Any, at: _At) -> Tuple[str, ...]:
    """A string is split like a shell would; a list is taken verbatim, one argv entry per item."""
    if isinstance(value, str):
        return split_args(value, where=at.field, source=at.source, line=at.line)
    if isinstance(value, list) or (isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray))):
        return tuple(_word(item, at.item(value, index), "each argument") for index, item in enumerate(value))
    at.expected('a string like "--interval 1 --use-gpu" or a list of strings', value)


def _env(value: Any, at: _At) -> Dict[str, str]:
    """Environment variables: valid names, scalar values written out as strings."""
    mapping = _mapping(value, at, "a mapping of environment variable names to values")
    env: Dict[str, str] = {}
    for key, item in mapping.items():
        key_at = at.key(mapping, key)
        env[_env_name(key, key_at)] = _word(item, key_at, "an environment value")
    return env


def _env_name(key: Any, at: _At) -> str:
    if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
        at.expected("an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", key)
    return key


def _cli_env(value: Union[Mapping[str, str], Sequence[str]], at: _At) -> Dict[str, str]:
    """CLI environment: a mapping, or ``KEY=VALUE`` strings (later ones win, as with ``docker run -e``)."""
    if isinstance(value, Mapping):
        return _env(value, at)
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, Sequence):
        at.expected("KEY=VALUE strings", value)
    env: Dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, str) or "=" not in entry:
            at.expected("KEY=VALUE", entry)
        key, _, text = entry.partition("=")
        env[_env_name(key, at)] = _no_nul(text, at, "an environment value")
    return env


def _metrics_and_tools(value: Any, at: _At) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """``metrics`` as the seeds use it: collector names, and the profiling tools whose dumps to collect (``[system,
    nvprof]``). Returns (collectors, tools); only tools named: the default collectors."""
    names = _metrics(value, at, tools_too=True)
    collectors = tuple(n for n in names if n not in KNOWN_TOOLS) or DEFAULT_METRICS
    return collectors, tuple(n for n in names if n in KNOWN_TOOLS)


def _metrics(value: Any, at: _At, *, tools_too: bool = False) -> Tuple[str, ...]:
    """Names from KNOWN_METRICS (and KNOWN_TOOLS with ``tools_too``), as a list or a comma-separated string;
    duplicates dropped, order kept."""
    known = (*KNOWN_METRICS, *KNOWN_TOOLS) if tools_too else KNOWN_METRICS
    valid = ", ".join(KNOWN_METRICS) + (f" (or a profiling tool: {', '.join(KNOWN_TOOLS)})" if tools_too else "")
    if isinstance(value, str):
        items: List[Tuple[Any, _At]] = [(name, at) for name in re.split(r"[,\s]+", value) if name]
    elif isinstance(value, list) or (isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray))):
        items = [(item, at.item(value, index)) for index, item in enumerate(value)]
    else:
        at.expected(f"a list of metric names from: {valid}", value)
    if not items:
        at.fail(f"expected at least one metric from: {valid}")
    names: List[str] = []
    for item, item_at in items:
        if not isinstance(item, str):
            item_at.expected(f"a metric name from: {valid}", item)
        name = item.strip()
        if name not in known:
            item_at.fail(f"unknown metric {name!r}{_suggest(name, known)}; valid metrics: {valid}")
        if name not in names:
            names.append(name)
    return tuple(names)


def _image_problem(ref: str) -> Optional[str]:
    """Why ``ref`` is not a Docker image reference ([host[:port]/]path[:tag][@digest]); None if it is one."""
    if not ref:
        return "it is empty"
    if any(ch.isspace() for ch in ref):
        return "it contains whitespace"
    name, _, digest = ref.partition("@")
    if "@" in ref and not _DIGEST.fullmatch(digest):
        return "the digest after '@' must look like sha256:<64 hex digits>"
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return f"the tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.'/'-'"
    if not name:
        return "the repository name is empty"
    if len(name) > 255:
        return "the repository name is longer than 255 characters"
    parts = name.split("/")
    # Docker's rule: the first component is a registry host only if it has a '.' or ':' or is "localhost".
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        host = parts.pop(0)
        if not _DOMAIN.fullmatch(host):
            return f"the registry {host!r} is not a valid host[:port]"
    for part in parts:
        if not _PATH_COMPONENT.fullmatch(part):
            if _PATH_COMPONENT.fullmatch(part.lower()):
                return "repository names must be lowercase"
            return (
                f"the name component {part!r} must be lowercase letters and digits, separated by '.', '_', '__' or '-'"
            )
    return None


def _image(value: Any, at: _At) -> str:
    expectation = 'a Docker image reference like "waggle/objcounter:0.0.0"'
    if not isinstance(value, str):
        at.expected(expectation, value)
    problem = _image_problem(value)
    if problem:
        at.fail(f"expected {expectation}, got {_describe(value)}: {problem}")
    return value


def _params(value: Any, at: _At) -> Dict[str, ParamValue]:
    """Knobs the app may ask for: lowercase names, scalar values (string, number or boolean)."""
    mapping = _mapping(value, at, "a mapping of knob names to values, e.g. {res: 640, model: yolov5n}")
    params: Dict[str, ParamValue] = {}
    for key, item in mapping.items():
        key_at = at.key(mapping, key)
        if not isinstance(key, str) or not _PARAM_NAME.fullmatch(key):
            key_at.expected("a knob name of lowercase letters, digits, '_' and '.' (at most 128)", key)
        if isinstance(item, float) and not math.isfinite(item):
            key_at.expected("a finite number", item)
        if not isinstance(item, (str, int, float, bool)):
            key_at.expected("a string, number or boolean", item)
        params[key] = item
    return params


def _required(value: Any, at: _At, metrics: Tuple[str, ...]) -> Tuple[str, ...]:
    """Collectors that must work, each also listed in ``metrics``."""
    try:
        listed = _metrics(value, at, tools_too=True)
    except SpecError:
        listed = ()  # reported below, as a list of collectors
    tools = [name for name in listed if name in KNOWN_TOOLS]
    if tools:
        at.fail(f"{', '.join(tools)}: a profiling tool, not a collector; a tool that cannot run stops the session "
                f"anyway, so required lists only collectors")
    names = _metrics(value, at)
    missing = [name for name in names if name not in metrics]
    if missing:
        at.fail(f"{', '.join(missing)} must also be listed in metrics to be required")
    return names


def _tools(value: Any, at: _At) -> Tuple[str, ...]:
    """Profiling tools to run the app under, one run each: a list of names from ``KNOWN_TOOLS`` (or a
    comma-separated string of them)."""
    expectation = f"a list of tool names from: {', '.join(KNOWN_TOOLS)}, e.g. [tau]"
    items = [name for name in re.split(r"[,\s]+", value) if name] if isinstance(value, str) else value
    if not isinstance(items, list):
        at.expected(expectation, value)
    names: List[str] = []
    for index, item in enumerate(items):
        item_at = at if isinstance(value, str) else at.item(items, index)
        if not isinstance(item, str):
            item_at.expected(expectation, item)
        if item not in KNOWN_TOOLS:
            item_at.fail(
                f"unknown tool {item!r}{_suggest(item, KNOWN_TOOLS)}; expected one of: {', '.join(KNOWN_TOOLS)}"
            )
        if item in names:
            item_at.fail(f"tool {item!r} is listed twice")
        names.append(item)
    return tuple(names)


def _merge_tools(tools: Tuple[str, ...], more: Tuple[str, ...]) -> Tuple[str, ...]:
    """``tools`` and the tools named in ``metrics``, each once, in that order."""
    return tuple(dict.fromkeys((*tools, *more)))


def _target_name(value: Any, at: _At) -> str:
    if not isinstance(value, str) or not _TARGET_NAME.fullmatch(value):
        at.expected("a name of letters, digits, '.', '_' or '-' (at most 64, starting with a letter or digit)", value)
    return value


def _target(value: Any, at: _At, default_name: str) -> Target:
    if not isinstance(value, Mapping):
        hint = ' (write it as a mapping: - {args: "...", timeout: 60})' if isinstance(value, str) else ""
        at.expected(f"a target mapping with keys {', '.join(_TARGET_KEYS)}{hint}", value)
    _check_keys(value, _TARGET_KEYS, at)
    args = _args(value["args"], at.key(value, "args")) if "args" in value else ()
    timeout = _seconds(value["timeout"], at.key(value, "timeout"), _TIMEOUT_EXPECTED) if "timeout" in value else 0.0
    env = _env(value["env"], at.key(value, "env")) if "env" in value else {}
    name = _target_name(value["name"], at.key(value, "name")) if "name" in value else default_name
    params = _params(value["params"], at.key(value, "params")) if "params" in value else {}
    return Target(args=args, timeout_s=timeout, env=env, name=name, params=params)


def _targets(value: Any, at: _At) -> Tuple[Target, ...]:
    expectation = 'a non-empty list of targets, e.g. - {args: "--use-gpu", timeout: 60}'
    if not isinstance(value, list):
        at.expected(expectation, value)
    if not value:
        at.fail(f"expected {expectation}, got an empty list")
    targets: List[Target] = []
    first_use: Dict[str, int] = {}
    for index, item in enumerate(value):
        item_at = at.item(value, index)
        target = _target(item, item_at, default_name=f"target{index + 1}")
        if target.name in first_use:
            name_at = item_at.key(item, "name") if "name" in item else item_at
            name_at.fail(
                f"duplicate target name {target.name!r} (already used by targets[{first_use[target.name]}]; "
                "unnamed targets are called target1, target2, ...)"
            )
        first_use[target.name] = index
        targets.append(target)
    return tuple(targets)


def _limits(value: Any, at: _At) -> Limits:
    mapping = _mapping(value, at, f"a mapping with keys {', '.join(_LIMIT_KEYS)}")
    _check_keys(mapping, _LIMIT_KEYS, at)
    memory = _memory(mapping["memory"], at.key(mapping, "memory")) if "memory" in mapping else None
    cpus = (
        _positive_float(mapping["cpus"], at.key(mapping, "cpus"), "a number of CPUs > 0, e.g. 1.5")
        if "cpus" in mapping
        else None
    )
    pids = (
        _integer(mapping["pids"], at.key(mapping, "pids"), "an integer number of processes >= 1", least=1)
        if "pids" in mapping
        else None
    )
    return Limits(memory_bytes=memory, cpus=cpus, pids=pids)


# ----------------------------------------------------------------------------------------------------------
# Whole profiles


def _from_section(
    section: Mapping[Any, Any],
    at: _At,
    *,
    image: Optional[str],
    default_image: Optional[Callable[[], str]],
    hints: Sequence[str] = (),
) -> Profile:
    """Build a Profile from the mapping that holds the profile keys (a standalone file or ``profiling:``)."""
    _check_keys(section, _PROFILE_KEYS, at, hints)

    def opt(key: str) -> Tuple[bool, Any, _At]:
        return key in section, section.get(key), at.key(section, key)

    if image is not None:
        chosen = _image(image, _At(at.source, "image", None))
    elif "image" in section:
        chosen = _image(section["image"], at.key(section, "image"))
    elif default_image is not None:
        chosen = default_image()
    else:
        at.key(section, "image").fail("no image: add 'image:' to the profile or give one with --image")

    if "targets" not in section:
        at.key(section, "targets").fail(
            'missing: a profile needs a non-empty list of targets, e.g. - {args: "--use-gpu", timeout: 60}'
        )
    targets = _targets(section["targets"], at.key(section, "targets"))

    has, value, where = opt("metrics")
    metrics, metric_tools = _metrics_and_tools(value, where) if has else (DEFAULT_METRICS, ())
    has, value, where = opt("interval")
    interval = _seconds(value, where, _INTERVAL_EXPECTED, positive=True, most=MAX_INTERVAL_S) if has else None
    has, value, where = opt("repeat")
    repeat = _integer(value, where, f"an integer from 1 to {MAX_REPEAT}", least=1, most=MAX_REPEAT) if has else 1
    has, value, where = opt("env")
    env = _env(value, where) if has else {}
    has, value, where = opt("grace")
    grace = _seconds(value, where, _GRACE_EXPECTED) if has else DEFAULT_GRACE_S
    has, value, where = opt("limits")
    limits = _limits(value, where) if has else Limits()
    has, value, where = opt("params")
    params = _params(value, where) if has else {}
    has, value, where = opt("required")
    required = _required(value, where, metrics) if has else ()
    has, value, where = opt("tools")
    tools = _merge_tools(_tools(value, where) if has else (), metric_tools)

    return Profile(
        image=chosen,
        targets=targets,
        metrics=metrics,
        interval_s=DEFAULT_INTERVAL_S if interval is None else interval,
        repeat=repeat,
        env=env,
        grace_s=grace,
        limits=limits,
        source=at.source,
        params=params,
        required=required,
        tools=tools,
    )


def _sage_image(doc: Mapping[Any, Any], at: _At) -> str:
    """The image an ECR build of this sage.yaml produces: ``{namespace}/{name}:{version}``."""
    parts: List[str] = []
    for key in ("namespace", "name", "version"):
        key_at = at.key(doc, key)
        if key not in doc:
            _At(at.source, "profiling.image", at.line).fail(
                f"cannot work out the image: the sage.yaml has no {key!r}; set profiling.image or give --image"
            )
        value = doc[key]
        if isinstance(value, float):
            key_at.fail(f"expected a string, got {_describe(value)}; quote it (YAML reads 1.10 as the number 1.1)")
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            key_at.expected("a non-empty string", value)
        parts.append(str(value))
    ref = f"{parts[0]}/{parts[1]}:{parts[2]}"
    problem = _image_problem(ref)
    if problem:
        at.key(doc, "name").fail(
            f"the image {ref!r} made from namespace/name/version is not a valid Docker reference "
            f"({problem}); "
            "set profiling.image"
        )
    return ref


def _from_document(doc: Any, source: str, image: Optional[str]) -> Profile:
    root = _At(source, "", 1)
    if doc is None:
        root.fail("the profile is empty; expected a mapping with 'image' and 'targets' (or a sage.yaml)")
    if not isinstance(doc, Mapping):
        line = doc.line if isinstance(doc, _Seq) else 1
        _At(source, "", line).expected("a mapping at the top level", doc)
    if "profiling" in doc:
        section = doc["profiling"]
        section_at = root.key(doc, "profiling")
        if not isinstance(section, Mapping):
            section_at.expected("the profiling section as a mapping with 'targets' (and 'metrics', ...)", section)
        return _from_section(section, section_at, image=image, default_image=lambda: _sage_image(doc, root))
    sage_keys = [key for key in doc if isinstance(key, str) and key in _SAGE_MARKERS]
    if sage_keys:
        _missing_profiling(doc, root, sage_keys)
    return _from_section(doc, root, image=image, default_image=None, hints=("profiling",))


def _missing_profiling(doc: Mapping[Any, Any], root: _At, sage_keys: Sequence[str]) -> NoReturn:
    """A sage.yaml without ``profiling:``: say so, and point at a misspelt or misplaced section if any."""
    message = (
        f"this looks like an ECR sage.yaml (it has {sage_keys[0]!r}) but has no 'profiling:' section; "
        'add one, e.g. profiling: {targets: [{args: "--use-gpu", timeout: 60}]}'
    )
    others = [key for key in doc if isinstance(key, str) and key not in _SAGE_MARKERS]
    close = difflib.get_close_matches("profiling", others, n=1, cutoff=0.6)
    if close:
        message += f" (is {close[0]!r} a misspelling of 'profiling'?)"
    misplaced = [key for key in others if key in _PROFILE_KEYS]
    if misplaced:
        message += f" ({misplaced[0]!r} belongs under 'profiling:')"
    root.key(doc, "profiling").fail(message)


def _check_size(size: int, max_bytes: int, source: str) -> None:
    if size > max_bytes:
        raise SpecError(f"the profile is larger than the {max_bytes}-byte limit; refusing to parse it", source=source)


def parse_profile(text: str, *, source: str, image: Optional[str] = None, max_bytes: int = MAX_SPEC_BYTES) -> Profile:
    """Validate a profile given as YAML text. ``source`` names it in messages; ``image`` overrides its own."""
    if not isinstance(text, str):
        raise SpecError(f"expected the profile as text, got {_describe(text)}", source=source)
    # A character is 1 to 4 UTF-8 bytes: decide from the length alone when it can, encode only when it must.
    if len(text) > max_bytes:
        _check_size(len(text), max_bytes, source)
    elif len(text) * 4 > max_bytes:
        _check_size(len(text.encode("utf-8", "surrogatepass")), max_bytes, source)
    return _from_document(_load_yaml(text, source), source, image)


def load_profile(
    path: Union[str, os.PathLike[str]], *, image: Optional[str] = None, max_bytes: int = MAX_SPEC_BYTES
) -> Profile:
    """Read and validate a profile file (standalone or sage.yaml). ``image`` overrides the file's image."""
    source = os.fspath(path)
    try:
        with Path(path).open("rb") as handle:
            # Read one byte past the cap: enough to know the file is too big without reading all of it.
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SpecError(f"cannot read the profile: {exc.strerror or exc}", source=source) from None
    _check_size(len(data), max_bytes, source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError("the profile is not valid UTF-8 text", source=source, line=line) from None
    return parse_profile(text, source=source, image=image, max_bytes=max_bytes)


def profile_from_args(
    *,
    image: str,
    args: Union[str, Sequence[str]] = "",
    timeout: Union[float, str] = 0,
    env: Union[Mapping[str, str], Sequence[str]] = (),
    metrics: Optional[Sequence[str]] = None,
    interval: Union[float, str, None] = None,
    repeat: Union[int, str, None] = None,
    grace: Union[float, str, None] = None,
    memory: Optional[str] = None,
    cpus: Union[float, str, None] = None,
    pids: Union[int, str, None] = None,
    tools: Union[str, Sequence[str], None] = None,
    source: str = "<command line>",
) -> Profile:
    """A one-target profile from command-line values: ``waap run --image IMG --args "..." --timeout 30``.

    Values may be strings as argparse gives them; errors name the option (``--timeout``) instead of a line.
    """

    def option(name: str) -> _At:
        return _At(source, name, None, flat=True)

    # Checked in the order a user reads the command line, so the first mistake is the one reported.
    chosen = _image(image, option("--image"))
    argv = _args(args, option("--args"))
    timeout_s = _seconds(timeout, option("--timeout"), _TIMEOUT_EXPECTED)
    common_env = _cli_env(env, option("--env"))
    if metrics is not None and not isinstance(metrics, str):
        # Each --metrics value may itself be a comma-separated list ("--metrics system,gpu-summary").
        metrics = [part for item in metrics for part in (item.split(",") if isinstance(item, str) else [item])]
    names, metric_tools = (DEFAULT_METRICS, ()) if metrics is None else _metrics_and_tools(metrics,
                                                                                           option("--metrics"))
    interval_s = (
        DEFAULT_INTERVAL_S
        if interval is None
        else _seconds(interval, option("--interval"), _INTERVAL_EXPECTED, positive=True, most=MAX_INTERVAL_S)
    )
    repeats = (
        1
        if repeat is None
        else _integer(repeat, option("--repeat"), f"an integer from 1 to {MAX_REPEAT}", least=1, most=MAX_REPEAT)
    )
    grace_s = DEFAULT_GRACE_S if grace is None else _seconds(grace, option("--grace"), _GRACE_EXPECTED)
    limits = Limits(
        memory_bytes=None if memory is None else _memory(memory, option("--memory")),
        cpus=None if cpus is None else _positive_float(cpus, option("--cpus"), "a number of CPUs > 0, e.g. 1.5"),
        pids=None if pids is None else _integer(pids, option("--pids"), "an integer >= 1", least=1),
    )
    return Profile(
        image=chosen,
        targets=(Target(args=argv, timeout_s=timeout_s, env={}, name="target1"),),
        metrics=names,
        interval_s=interval_s,
        repeat=repeats,
        env=common_env,
        grace_s=grace_s,
        limits=limits,
        source=source,
        tools=_merge_tools(() if not tools else _tools(tools, option("--tools")), metric_tools),
    )
