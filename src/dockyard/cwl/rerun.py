"""A rerun of a CWL document in which nothing changed, answered without loading it.

Every tool invocation of such a rerun would be answered by the cache; what costs is
loading cwltool and the document. So when a run in a kept state folder succeeds, it
leaves a record: the files it read (every document fetched, the job file, each input
file and every file under each input folder, what each tool was given), by size,
modification time and inode; the id of each image it used; and its output object with
the committed output each file of it was copied from. A later invocation with the same
command line (only ``--outdir``, ``--quiet``, ``--cachedir``, ``--images`` and
``--backend`` may be given) whose record still holds — nothing it read changed, its
images are the same, its outputs are still in the store — copies those outputs to its
``--outdir`` and prints the output object, without importing cwltool. Anything else runs
as usual (and its tool invocations are answered by the cache as far as they can be).

This module imports nothing heavy: it is what a no-change rerun costs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dockyard.cwl.locations import path_of

RECORDS = "cwl-reruns"
RACY_NS = 1_000_000_000  # no record of a run that read what changed in the last second
FORMAT = 1
_VALUED = {"--outdir", "--cachedir", "--images", "--backend"}


@dataclass(frozen=True)
class Invocation:
    """A command line simple enough to be answered from a record."""

    document: str
    job: str | None
    outdir: Path
    state: Path
    quiet: bool
    images: str | None
    backend: str | None

    def key(self) -> str:
        from dockyard import __version__

        material = [
            FORMAT,
            __version__,
            self.document,
            self.job,
            self.images,
            self.backend or os.environ.get("DOCKYARD_BACKEND") or "local",
        ]
        return hashlib.sha256(json.dumps(material).encode()).hexdigest()

    @property
    def record(self) -> Path:
        return self.state / RECORDS / f"{self.key()}.json"


def simple_invocation(argv: list[str], state: Path | None = None) -> Invocation | None:
    """The invocation ``argv`` asks for, if it is simple enough (else None): ``state`` is
    its state folder when the caller knows it, else ``--cachedir`` (none: no record)."""
    values: dict[str, str] = {}
    positional: list[str] = []
    quiet = False
    args = iter(argv)
    for arg in args:
        name, has_value, value = arg.partition("=")
        if arg == "--quiet":
            quiet = True
        elif name in _VALUED:
            if not has_value:
                value = next(args, "")
            if not value:
                return None
            values[name] = value
        elif arg.startswith("-"):
            return None  # (cwltool's options: run as usual)
        else:
            positional.append(arg)
    if not 1 <= len(positional) <= 2:
        return None
    where = state or (Path(values["--cachedir"]) if "--cachedir" in values else None)
    if where is None:
        return None
    images = values.get("--images") or os.environ.get("DOCKYARD_CWL_IMAGES")
    return Invocation(
        document=_absolute(positional[0]),
        job=_absolute(positional[1]) if len(positional) == 2 else None,
        outdir=Path(values.get("--outdir", ".")).absolute(),
        state=where.absolute(),
        quiet=quiet,
        images=_absolute(images) if images else None,
        backend=values.get("--backend"),
    )


def _absolute(location: str) -> str:
    path, hash_mark, fragment = location.partition("#")
    return str(Path(path).absolute()) + hash_mark + fragment


# -- answering from a record ------------------------------------------------------------------


def answer(invocation: Invocation, stdout: IO[str]) -> bool:
    """Copy the recorded outputs and print the output object, if the record holds."""
    try:
        record = json.loads(invocation.record.read_text())
    except (OSError, ValueError):
        return False
    if record.get("format") != FORMAT or not _unchanged(record["read"]):
        return False
    copies = [(Path(source), rel) for source, rel in record["copies"]]
    if not all(source.exists() for source, _ in copies) or not _same_images(record["images"]):
        return False
    outdir = invocation.outdir
    try:
        for source, rel in copies:
            target = outdir / rel
            if not _inside(target, outdir):
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            # (links followed, as cwltool copies them: the outputs were checked to hold no
            # link that leads outside them)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
    except OSError as exc:
        print(f"dockyard: the rerun record could not be used ({exc}): running", file=sys.stderr)
        return False
    found = _moved(record["output"], record["outdir"], str(outdir))
    json.dump(found, stdout, indent=4, ensure_ascii=False)
    stdout.flush()
    if not invocation.quiet:
        print(
            f"dockyard: nothing changed since run {record['run']}: its outputs are copied "
            "(every tool would have been answered by the cache)",
            file=sys.stderr,
        )
    return True


def _unchanged(read: list[list[Any]]) -> bool:
    for path, size, mtime_ns, inode in read:
        try:
            info = os.stat(path)
        except OSError:
            if size == ABSENT:
                continue
            return False
        if size == A_FOLDER and stat.S_ISDIR(info.st_mode):
            continue
        if (info.st_size, info.st_mtime_ns, info.st_ino) != (size, mtime_ns, inode):
            return False
    return True


def _inside(path: Path, folder: Path) -> bool:
    normal = os.path.normpath(path)
    return normal.startswith(os.path.normpath(folder) + os.sep)


def _same_images(images: dict[str, str]) -> bool:
    if not images:
        return True
    try:
        import docker

        client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST") or None, timeout=10)
    except Exception:
        return False
    try:
        for name, image_id in images.items():
            if client.inspect_image(name).get("Id") != image_id:  # type: ignore[no-untyped-call]
                return False
    except Exception:  # (gone, or the engine does not answer: run as usual)
        return False
    finally:
        client.close()
    return True


def _moved(value: Any, before: str, after: str) -> Any:
    """The output object with its files' paths under ``after`` instead of ``before``."""
    if isinstance(value, list):
        return [_moved(v, before, after) for v in value]
    if not isinstance(value, dict):
        return value
    moved = {k: _moved(v, before, after) for k, v in value.items()}
    for field, prefix in (("path", ""), ("location", "file://")):
        text = moved.get(field)
        old = prefix + before
        if isinstance(text, str) and (text == old or text.startswith(old + "/")):
            moved[field] = prefix + after + text[len(old) :]
    return moved


# -- making a record ----------------------------------------------------------------------


def write_record(
    invocation: Invocation,
    run_id: str,
    fetched: Iterable[str],
    job_order: Any,
    staged: Iterable[str],
    images: dict[str, str],
    committed: Any,
    output: Any,
) -> None:
    """Record a successful run: ``committed`` is its output object as the store holds it,
    ``output`` as it was printed (copied to the invocation's outdir)."""
    state = os.path.realpath(invocation.state) + os.sep
    outdir = str(invocation.outdir) + os.sep

    # What was read as a whole (inputs, what the tools were given): every file under it;
    # what cwltool only looked at (documents, the paths it asked about, such as optional
    # secondary files): a file by its status, a folder by being there, a path by its
    # absence (a secondary file that appears beside an input shows).
    def ours(path: str) -> bool:  # (dockyard's own files, and what this run wrote)
        return path.startswith((state, outdir))

    trees = {path for path in {*_locations(job_order), *staged} if not ours(path)}
    looked = {path for path in fetched if not ours(path)}
    if invocation.images:
        looked.add(invocation.images.partition("#")[0])
    entries = {entry for path in trees for entry in _stats(path, walk=True)}
    entries |= {_looked_at(path) for path in looked - trees}
    read = sorted(entries)
    if any(mtime_ns > time.time_ns() - RACY_NS for _, _, mtime_ns, _ in read):
        return  # (changed a moment ago: a second change in the same tick would not show)
    copies = sorted(set(_copies(committed, output, str(invocation.outdir))))
    record = {
        "format": FORMAT,
        "run": run_id,
        "read": read,
        "images": images,
        "copies": copies,
        "outdir": str(invocation.outdir),
        "output": output,
    }
    invocation.record.parent.mkdir(parents=True, exist_ok=True)
    partial = invocation.record.with_suffix(".partial")
    partial.write_text(json.dumps(record))
    partial.replace(invocation.record)


def _locations(value: Any) -> Iterator[str]:
    """The local paths of every File and Directory in an input object."""
    if isinstance(value, list):
        for item in value:
            yield from _locations(item)
    elif isinstance(value, dict):
        if value.get("class") in ("File", "Directory"):
            where = path_of(value)
            if where is not None:
                yield where
        for item in value.values():
            yield from _locations(item)


ABSENT = -1  # (in a record's size: the path was not there)
A_FOLDER = -2  # (in a record's size: a folder was there; what it holds was not read)


def _looked_at(path: str) -> tuple[str, int, int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (path, ABSENT, 0, 0)
    if stat.S_ISDIR(info.st_mode):
        return (path, A_FOLDER, 0, 0)
    return (path, info.st_size, info.st_mtime_ns, info.st_ino)


def _stats(path: str, *, walk: bool) -> Iterator[tuple[str, int, int, int]]:
    """A path's status (none if it is gone); with ``walk``, for a folder, that of
    everything under it too."""
    try:
        info = os.stat(path)
    except OSError:
        return
    yield (path, info.st_size, info.st_mtime_ns, info.st_ino)
    if walk and stat.S_ISDIR(info.st_mode):
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                entry = os.path.join(folder, name)
                try:
                    found = os.lstat(entry)
                except OSError:
                    continue  # (gone while walking: the rerun's check sees it)
                yield (entry, found.st_size, found.st_mtime_ns, found.st_ino)


def _copies(committed: Any, output: Any, outdir: str) -> Iterator[tuple[str, str]]:
    """(where in the store, where under outdir) of every file and folder of the output."""
    if isinstance(committed, list) and isinstance(output, list):
        for before, after in zip(committed, output, strict=False):
            yield from _copies(before, after, outdir)
    elif isinstance(committed, dict) and isinstance(output, dict):
        if committed.get("class") in ("File", "Directory"):
            source, target = path_of(committed), path_of(output)
            if source and target and _inside(Path(target), Path(outdir)):
                yield source, os.path.relpath(os.path.normpath(target), outdir)
            if committed.get("class") == "Directory":
                return  # (copied whole)
        for key, before in committed.items():
            if key in output:
                yield from _copies(before, output[key], outdir)
