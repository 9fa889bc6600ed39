"""Unpacking a build's artifacts safely. What a profiling build archives comes from an untrusted app's output, so an
archive is checked whole before anything is written: no absolute paths, no ``..``, no symbolic links or special
files, no duplicates, at most ``max_files`` files and ``max_bytes`` bytes (counted while writing too, since a zip's
sizes are only claims). Files are created fresh (``O_EXCL | O_NOFOLLOW``) with mode 0644, whatever the archive says.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Iterable, List, Tuple, Union

from ..errors import WaapError

__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "ArtifactError",
    "UnsafeArchive",
    "clean_destination",
    "extract_zip",
    "make_parents",
    "member_parts",
    "prepare_destination",
    "write_file",
]

_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArtifactError(WaapError):
    """The artifacts could not be written where asked (the folder is not empty, the disk is full, ...)."""


class UnsafeArchive(ArtifactError):
    """The artifacts hold a path or a file type that cannot be extracted safely, or exceed the limits."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 20_000
    max_bytes: int = 8 * 1024**3  # uncompressed total, and the most that is downloaded


DEFAULT_LIMITS = ArchiveLimits()


def member_parts(name: str) -> Tuple[str, ...]:
    """The path components of an archive member name, or ``UnsafeArchive`` when it could land outside the folder
    it is extracted into. Empty and ``.`` components are dropped; a folder entry keeps its trailing ``/`` off."""
    shown = name if len(name) <= 200 else name[:200] + "…"
    if "\x00" in name:
        raise UnsafeArchive(f"{shown!r}: a path with a NUL character")
    if "\\" in name:
        # zip paths use '/'; a backslash is a Windows separator on some readers: refuse rather than guess
        raise UnsafeArchive(f"{shown!r}: a path with a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(f"{shown!r}: an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{shown!r}: a path that climbs out with '..'")
    return parts


def _kind(info: zipfile.ZipInfo) -> str:
    """'file' or 'dir'; symbolic links and special files (devices, FIFOs, sockets) are refused."""
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if info.create_system == 3 and fmt:  # Unix attributes are present
        if stat.S_ISLNK(mode):
            raise UnsafeArchive(f"{info.filename!r}: a symbolic link")
        if fmt not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(f"{info.filename!r}: a special file (mode {oct(mode)})")
        if stat.S_ISDIR(mode):
            return "dir"
    return "dir" if info.filename.endswith("/") else "file"


def prepare_destination(dest: Path) -> bool:
    """Make sure ``dest`` is an empty folder; returns whether it was created. Refuses a non-empty one, so results
    of different builds never mix."""
    if dest.is_symlink():
        raise ArtifactError(f"{dest} is a symbolic link; give a plain folder for the artifacts")
    if dest.exists():
        if not dest.is_dir():
            raise ArtifactError(f"{dest} exists and is not a folder")
        if any(dest.iterdir()):
            raise ArtifactError(f"{dest} is not empty; give an empty or new folder for the artifacts")
        return False
    try:
        dest.mkdir(parents=True)
    except OSError as e:
        raise ArtifactError(f"cannot create {dest}: {e.strerror or e}") from e
    return True


def clean_destination(dest: Path, created: bool) -> None:
    """Undo a failed extraction: remove ``dest`` if we created it, else empty it again."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def make_parents(dest: Path, parts: Tuple[str, ...]) -> Path:
    """Create the folders of ``parts[:-1]`` under ``dest`` one by one, refusing anything that is not a plain folder
    we can see (a file of the same name, a symbolic link)."""
    here = dest
    for part in parts[:-1]:
        here = here / part
        try:
            here.mkdir()
        except FileExistsError:
            if here.is_symlink() or not here.is_dir():
                raise UnsafeArchive(f"{'/'.join(parts)!r}: {part!r} is both a file and a folder") from None
    return here / parts[-1]


def write_file(target: Path, chunks: Iterable[bytes], budget: int, *, what: str) -> int:
    """Write ``chunks`` to a new file ``target`` (never through a link, never over a file); raises
    ``UnsafeArchive`` past ``budget`` bytes. Returns the number of bytes written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise UnsafeArchive(f"{what!r}: appears twice, or as a file and a folder") from None
    except IsADirectoryError:
        raise UnsafeArchive(f"{what!r}: is both a file and a folder") from None
    written = 0
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            written += len(chunk)
            if written > budget:
                raise UnsafeArchive(f"the artifacts are larger than the limit ({_size(budget)} left at {what!r})")
            fh.write(chunk)
    return written


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


def _read(fh: IO[bytes]) -> Iterable[bytes]:
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def extract_zip(
    source: Union[Path, BinaryIO],
    dest: Path,
    *,
    strip_prefix: str = "",
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> List[Path]:
    """Extract a zip archive into ``dest`` (an empty or new folder) after checking every member; returns the files
    written. ``strip_prefix`` (e.g. ``archive/``, the folder Jenkins puts its artifact zips in) is removed from the
    names that start with it. On any failure nothing is left in ``dest``."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as e:
        raise UnsafeArchive(f"the artifacts are not a valid zip archive: {e}") from e
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_files:
            raise UnsafeArchive(f"the artifacts hold {len(infos)} entries, more than the limit of {limits.max_files}")
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_bytes:
            raise UnsafeArchive(f"the artifacts would take {_size(declared)}, more than the limit of "
                                f"{_size(limits.max_bytes)}")
        plan: List[Tuple[Tuple[str, ...], zipfile.ZipInfo]] = []
        seen = set()
        for info in infos:
            name = info.filename
            if strip_prefix and name.startswith(strip_prefix):
                name = name[len(strip_prefix):]
            parts = member_parts(name)
            kind = _kind(info)
            if info.flag_bits & 0x1:
                raise UnsafeArchive(f"{info.filename!r}: an encrypted entry")
            if kind == "dir" or not parts:
                continue
            if parts in seen:
                raise UnsafeArchive(f"{info.filename!r}: appears twice")
            seen.add(parts)
            plan.append((parts, info))

        created = prepare_destination(dest)
        written: List[Path] = []
        budget = limits.max_bytes
        try:
            for parts, info in plan:
                target = make_parents(dest, parts)
                with archive.open(info) as member:
                    budget -= write_file(target, _read(member), budget, what="/".join(parts))
                written.append(target)
        except BaseException as e:
            clean_destination(dest, created)
            if isinstance(e, (zipfile.BadZipFile, EOFError)):
                raise UnsafeArchive(f"the artifacts archive is corrupt: {e}") from e
            if isinstance(e, OSError):
                raise ArtifactError(f"cannot write the artifacts into {dest}: {e.strerror or e}") from e
            raise
    return written

