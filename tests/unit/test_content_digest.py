"""File digests by chunks: defined by the bytes, computed at the cost of the data."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.disk import content_digest
from dockyard.disk.content_digest import CHUNK, PREFIX

GiB = 1 << 30


def reference(size: int, data: dict[int, bytes]) -> str:
    """The digest as its definition reads, from the content alone (bytes at offsets,
    zeros elsewhere), without a file: no holes, no extents, no reading."""
    outer = hashlib.sha256(PREFIX + size.to_bytes(8, "big"))
    touched = sorted({o // CHUNK + i for o, d in data.items() for i in range(_chunks(o, d))})
    zeros = 0
    done = 0
    for index in touched:
        zeros += index - done
        chunk = bytearray(min(CHUNK, size - index * CHUNK))
        for offset, bytes_ in data.items():
            lo, hi = max(offset, index * CHUNK), min(offset + len(bytes_), (index + 1) * CHUNK)
            if lo < hi:
                chunk[lo - index * CHUNK : hi - index * CHUNK] = bytes_[lo - offset : hi - offset]
        if any(chunk):
            if zeros:
                outer.update(b"Z" + zeros.to_bytes(8, "big"))
                zeros = 0
            outer.update(b"D" + hashlib.sha256(chunk).digest())
        else:
            zeros += 1
        done = index + 1
    zeros += -(-size // CHUNK) - done
    if zeros:
        outer.update(b"Z" + zeros.to_bytes(8, "big"))
    return outer.hexdigest()


def _chunks(offset: int, data: bytes) -> int:
    return (offset + len(data) - 1) // CHUNK - offset // CHUNK + 1 if data else 0


def _sparse(path: Path, size: int, data: dict[int, bytes]) -> None:
    with path.open("wb") as fh:
        fh.truncate(size)
        for offset, bytes_ in data.items():
            fh.seek(offset)
            fh.write(bytes_)


def _dense(path: Path, size: int, data: dict[int, bytes]) -> None:
    content = bytearray(size)
    for offset, bytes_ in data.items():
        content[offset : offset + len(bytes_)] = bytes_
    path.write_bytes(content)


def _digest(path: Path) -> content_digest.Content:
    fd = os.open(path, os.O_RDONLY)
    try:
        return content_digest.digest(fd)
    finally:
        os.close(fd)


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    read: list[int] = []
    real = os.preadv

    def counted(fd: int, buffers: list[memoryview], offset: int) -> int:
        got = real(fd, buffers, offset)
        read.append(got)
        return got

    monkeypatch.setattr(content_digest.os, "preadv", counted)
    yield read


def test_a_64_gib_sparse_file_is_hashed_by_its_data_alone(tmp_path: Path, bytes_read) -> None:
    data = {0: b"head", 5 * GiB + 12345: b"x" * 100_000, 64 * GiB - 3: b"end"}
    _sparse(tmp_path / "z", 64 * GiB, data)
    assert (tmp_path / "z").stat().st_blocks * 512 < 1 << 20
    found = _digest(tmp_path / "z")
    assert found.hex == reference(64 * GiB, data)
    assert (found.size, found.data) == (64 * GiB, 4 * CHUNK)  # the chunks with data
    assert sum(bytes_read) <= 5 * CHUNK  # the chunks the data touches: never the holes


def test_sparse_and_dense_files_of_the_same_bytes_have_one_digest(tmp_path: Path) -> None:
    data = {3: b"abc", CHUNK - 2: b"across", 3 * CHUNK: bytes(CHUNK), 5 * CHUNK + 7: b"z"}
    size = 6 * CHUNK + 100
    _sparse(tmp_path / "sparse", size, data)
    _dense(tmp_path / "dense", size, data)
    sparse, dense = _digest(tmp_path / "sparse"), _digest(tmp_path / "dense")
    assert sparse == dense
    assert sparse.hex == reference(size, data)
    assert sparse.data == 3 * CHUNK  # (written zeros count as zeros: not data)


def test_the_digest_names_the_size(tmp_path: Path) -> None:
    _sparse(tmp_path / "a", CHUNK, {})
    _sparse(tmp_path / "b", CHUNK + 1, {})
    _sparse(tmp_path / "c", 0, {})
    digests = {_digest(tmp_path / n).hex for n in "abc"}
    assert len(digests) == 3


def test_a_file_system_that_cannot_tell_holes_loses_no_data(tmp_path: Path, monkeypatch) -> None:
    data = {10: b"data", 2 * CHUNK: b"more"}
    _sparse(tmp_path / "f", 3 * CHUNK, data)
    real = os.lseek

    def no_holes(fd: int, offset: int, whence: int) -> int:
        if whence in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "not supported")
        return real(fd, offset, whence)

    monkeypatch.setattr(os, "lseek", no_holes)
    assert _digest(tmp_path / "f").hex == reference(3 * CHUNK, data)


layouts = st.integers(min_value=0, max_value=5 * CHUNK + 999).flatmap(
    lambda size: st.tuples(
        st.just(size),
        st.dictionaries(
            st.integers(min_value=0, max_value=max(size - 1, 0)),
            st.one_of(
                st.binary(min_size=1, max_size=3 * CHUNK // 2),
                st.integers(1, 2 * CHUNK).map(bytes),  # written zeros
            ),
            max_size=5,
        ),
    )
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layout=layouts)
def test_any_layout_of_extents_gives_the_digest_of_its_bytes(tmp_path: Path, layout) -> None:
    size, written = layout
    data = {o: d[: max(size - o, 0)] for o, d in sorted(written.items()) if o < size}
    data = {o: d for o, d in data.items() if d}
    _sparse(tmp_path / "sparse", size, data)
    _dense(tmp_path / "dense", size, data)
    merged = bytearray((tmp_path / "dense").read_bytes())  # (later writes win, as in both)
    expected = reference(size, {0: bytes(merged)} if size else {})
    assert _digest(tmp_path / "sparse") == _digest(tmp_path / "dense")
    assert _digest(tmp_path / "sparse").hex == expected


def test_a_dense_file_is_hashed_once(tmp_path: Path, bytes_read) -> None:
    (tmp_path / "f").write_bytes(os.urandom(3 * CHUNK + 5))
    found = _digest(tmp_path / "f")
    assert sum(bytes_read) == 3 * CHUNK + 5 == found.data
    content = (tmp_path / "f").read_bytes()
    assert found.hex == reference(len(content), {0: content})
