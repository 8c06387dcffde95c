"""Volume streams under Hypothesis: whatever the bytes, `dockyard volume receive` takes them
or refuses them (exit 0 or 2, never an internal error), and nothing outside the data root
changes, not even where the stream's links point.

Inputs are random bytes; streams of records, valid or hostile (links to absolute, '..' and
chained targets followed by records through them, '.' and other bad paths, wrong types,
huge sizes), framed with a checksum that holds or not; and such streams mutated (a byte
flipped, cut short).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import event, given, settings
from hypothesis import strategies as st

from dockyard.cli import main
from dockyard.disk.volumes import VolumeStore
from tests.unit.stream_helpers import framed

# Placeholders, replaced once the example's folders exist.
SENTINEL = "@SENTINEL@"  # the absolute path of the folder that must not change
BASE = "@BASE@"  # the uuid of the receiving volume's snapshot, when it has one

NAMES = ["a", "b", "c"]


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` four times in five: a stream must mostly hold together to reach the code
    that acts on its records."""
    return st.sampled_from([usual, usual, usual, usual, odd]).flatmap(lambda chosen: chosen)


paths = mostly(
    mostly(
        st.sampled_from(NAMES),  # the top level, where a record's folder always is
        st.lists(st.sampled_from(NAMES), min_size=2, max_size=3).map("/".join),
    ),
    st.sampled_from([".", "", "..", "a/..", "../a", "/abs", "a//b", "./a", "a\0b", "a/", "/"]),
)
targets = st.one_of(
    st.sampled_from([*NAMES, "a/b", ".", "..", "/", ""]),
    st.sampled_from(["", "/dir", "/file", "/dir/victim", "/dir/sub"]).map(lambda t: SENTINEL + t),
    st.integers(1, 8).map(lambda k: "../" * k + "sentinel/dir"),
)
modes = mostly(
    st.integers(0, 0o7777),
    st.sampled_from([-1, 0o10000, 1 << 40, "755", None, True, 1.5]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["path", "mode", "mtime_ns", "size", "extents", "target", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=8,
)
extents = st.lists(st.lists(st.integers(-2, 1 << 50), min_size=1, max_size=3), max_size=3)

records = mostly(
    st.one_of(
        st.tuples(st.just("D"), paths, modes),
        st.tuples(st.just("F"), paths, st.binary(max_size=64), modes),
        st.tuples(st.just("L"), paths, targets),
        st.tuples(st.just("X"), paths),
    ),
    st.one_of(
        st.tuples(st.just("F?"), paths, st.integers(-1, 1 << 62), extents, st.binary(max_size=16)),
        st.tuples(
            st.just("raw"), st.sampled_from([b"D", b"F", b"L", b"X", b"Q", b"E"]), json_values
        ),
    ),
)
headers = mostly(
    st.sampled_from([{"base": None}, {"base": BASE}, {"tag": "t"}, {}]),
    st.one_of(st.sampled_from([{"tag": "12"}, {"tag": "[b]"}, {"base": "x/y"}]), json_values),
)
mutations = mostly(
    st.none(),
    st.one_of(
        st.tuples(st.just("cut"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    ),
)


def _through(link: str, kind: str, name: str, data: bytes) -> tuple[Any, ...]:
    path = f"{link}/{name}"
    return {
        "F": ("F", path, data, 0o644),
        "D": ("D", path, 0o755),
        "X": ("X", path),
        "L": ("L", path, "/etc/passwd"),
    }[kind]


# A link that leads out of the volume (absolute, '..', a chain of two, or the volume's
# own link when the stream is an increment), then a record through it.
escapes = st.builds(
    lambda setup, kind, name, data: [*setup, _through("a", kind, name, data)],
    st.sampled_from(
        [
            [("L", "a", SENTINEL + "/dir")],
            [("L", "a", "../../../../sentinel/dir")],
            [("L", "a", "../../../../../../../../.." + SENTINEL + "/dir")],
            [("L", "c", SENTINEL + "/dir"), ("L", "a", "c")],
            [("D", "c", 0o755), ("L", "c/up", "../../../../.."), ("L", "a", "c/up/sentinel/dir")],
            [("L", "a", "b")],  # 'b' links out in the receiving volume
        ]
    ),
    st.sampled_from(["F", "D", "X", "L"]),
    st.sampled_from(["victim", "sub", "new"]),
    st.binary(max_size=16),
)
record_lists = st.one_of(
    st.lists(records, max_size=8),
    st.builds(
        lambda before, escape, after: before + escape + after,
        st.lists(records, max_size=3),
        escapes,
        st.lists(records, max_size=2),
    ),
)
structured = st.tuples(
    headers,
    record_lists,
    mostly(st.just(True), st.just(False)),
    mutations,
    st.booleans(),
)
inputs = st.one_of(st.tuples(st.binary(max_size=256), st.booleans()), structured, structured)


def build(spec: Any, sentinel: Path, base: str | None) -> bytes:
    """The stream bytes for an example, its placeholders filled in."""
    if isinstance(spec[0], bytes):
        return spec[0]
    head, recs, checksum, mutation, _ = spec
    if isinstance(head, dict):
        head = {"snapshot": uuid.uuid4().hex, **head}
    raw = []
    for record in recs:
        kind = record[0]
        if kind == "D":
            raw.append((b"D", {"path": record[1], "mode": record[2], "mtime_ns": 0}, b""))
        elif kind == "F":
            data = record[2]
            fields = {"path": record[1], "mode": record[3], "mtime_ns": 0, "size": len(data)}
            fields["extents"] = [[0, len(data)]] if data else []
            raw.append((b"F", fields, data + hashlib.sha256(data).hexdigest().encode() + b"\n"))
        elif kind == "L":
            raw.append((b"L", {"path": record[1], "target": record[2]}, b""))
        elif kind == "X":
            raw.append((b"X", {"path": record[1]}, b""))
        elif kind == "F?":
            fields = {"path": record[1], "mode": 0o644, "mtime_ns": 0, "size": record[2]}
            fields["extents"] = record[3]
            raw.append((b"F", fields, record[4]))
        else:
            raw.append((record[1], record[2], b""))
    text = json.dumps([head, [(k.decode(), f, r.hex()) for k, f, r in raw]])
    text = text.replace(SENTINEL, str(sentinel)).replace(BASE, base or uuid.uuid4().hex)
    head, filled = json.loads(text)
    data = framed(
        head, [(k.encode(), f, bytes.fromhex(r)) for k, f, r in filled], checksum=checksum
    )
    if mutation is not None:
        where = min(int(mutation[1] * len(data)), len(data) - 1)
        if mutation[0] == "cut":
            data = data[:where]
        else:
            data = data[:where] + bytes([data[where] ^ mutation[2]]) + data[where + 1 :]
    return data


def state(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """Everything under ``root``: content or link target, mode, mtime and inode."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            if path.is_symlink():
                what = "-> " + os.readlink(path)
            elif path.is_file():
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = "dir"
            found[str(path.relative_to(root))] = (what, info.st_mode, info.st_mtime_ns, info.st_ino)
    return found


def make_sentinel(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "victim").write_text("host data")
    (root / "dir" / "sub" / "deep").write_text("deeper host data")
    (root / "file").write_text("host file")


@settings(max_examples=150, deadline=timedelta(seconds=5))
@given(inputs)
def test_any_stream_is_received_or_refused_and_nothing_outside_the_data_root_changes(
    spec: Any,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        sentinel, home = top / "sentinel", top / "home"
        make_sentinel(sentinel)
        home.mkdir()
        store = VolumeStore(home)
        base = None
        if spec[-1]:  # a volume that already has a snapshot, and a link to the sentinel
            live = store.ensure("v")
            (live / "a").mkdir()
            (live / "a" / "kept").write_text("volume data")
            os.symlink(sentinel / "dir", live / "b")
            base = store.snapshot("v").uuid
        data = build(spec, sentinel, base)
        before, home_before = state(sentinel), held(home)
        stdin, stderr = io.TextIOWrapper(io.BytesIO(data)), io.StringIO()
        with (
            mock.patch.dict(os.environ, {"DOCKYARD_HOME": str(home)}),
            mock.patch("sys.stdin", stdin),
            contextlib.redirect_stderr(stderr),
        ):
            code = main(["volume", "receive", "v"])
        event(f"exit {code}: {' '.join(stderr.getvalue().split()[:9])}")
        assert code in (0, 2), stderr.getvalue()
        assert state(sentinel) == before
        assert sorted(p.name for p in top.iterdir()) == ["home", "sentinel"]
        if code == 2:  # refused: all as it was, no volume folder or scratch left behind
            assert held(home) == home_before


def held(home: Path) -> dict[str, tuple[str, int, int, int]]:
    """What the data root holds, leaving out what taking a volume's lock changes (the lock
    file, folders' times) and the volumes folder itself (a scratch area's parent)."""
    return {
        rel: (what, mode, 0 if what == "dir" else mtime, inode)
        for rel, (what, mode, mtime, inode) in state(home).items()
        if rel not in ("volumes", "volumes/v/lock")
    }
