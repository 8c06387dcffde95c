"""A received tree is hashed as it is written (issue 24): its digest, counts and modes are
what a seal of it would give, without a second read of what arrived."""

from __future__ import annotations

import io
import os
import random
import stat
from pathlib import Path

import pytest

from dockyard.agent.tree_wire import Reader, TreeError, Writer
from dockyard.agent.trees import Bounds, receive_tree, write_tree
from dockyard.disk import content_digest, keeping, sealing, tree_digests
from dockyard.disk.content_digest import CHUNK, Hasher


def _varied(folder: Path) -> Path:
    """Folders nested and side by side, names whose order is not their order of making,
    modes of every kind, links, an empty file, a file with chunks of zeros inside, one of
    several MiB (pieces of more than one read)."""
    rng = random.Random(24)
    folder.mkdir()
    for name in ("b", "a.b", "a", "Z", "é", "a-"):
        (folder / name).write_bytes(rng.randbytes(rng.randrange(1, 3 * CHUNK)))
    (folder / "empty").write_bytes(b"")
    zeros = rng.randbytes(CHUNK) + bytes(3 * CHUNK) + rng.randbytes(CHUNK + 5)
    (folder / "zeros").write_bytes(zeros)
    (folder / "big").write_bytes(rng.randbytes(5 * (1 << 20) + 123))
    os.chmod(folder / "b", 0o751)
    os.chmod(folder / "a", 0o600)
    for sub in ("d2", "d1", "d1/x", "d1/x/y", "d10"):
        (folder / sub).mkdir()
        (folder / sub / "f").write_bytes(sub.encode())
    os.chmod(folder / "d2", 0o750)
    os.symlink("../b", folder / "d1" / "link")
    os.symlink("nowhere", folder / "dangling")
    return folder


def _modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
        if not path.is_symlink()
    }


def _kept_source(tmp_path: Path) -> tuple[Path, sealing.Sealed]:
    source = _varied(tmp_path / "source")
    sealed = sealing.seal_tree(source, modes=sealing.kept_mode)
    return keeping.keep(source, sealed, tmp_path / "a"), sealed


def test_a_received_tree_is_what_a_seal_of_it_gives_without_reading_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, sealed = _kept_source(tmp_path)
    out = io.BytesIO()
    write_tree(kept, out)

    def no_second_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("a received tree was read again")

    monkeypatch.setattr(sealing, "seal_tree", no_second_read)
    monkeypatch.setattr(content_digest, "digest", no_second_read)
    store = tmp_path / "b"
    got = receive_tree(io.BytesIO(out.getvalue()), sealed.digest, store, Bounds.of(sealed))
    monkeypatch.undo()

    assert tree_digests.tree_digest(got)[0] == sealed.digest
    assert _modes(got) == _modes(kept)  # (a seal of it would change none)
    assert keeping.read_record(store, sealed.digest) == Bounds.of(sealed)
    resealed = sealing.seal_tree(got, modes=sealing.kept_mode)
    assert (resealed.digest, resealed.changes) == (sealed.digest, ())


def test_entries_sent_out_of_order_are_hashed_in_walk_order(tmp_path: Path) -> None:
    rng = random.Random(7)
    data = {name: rng.randbytes(100 + i) for i, name in enumerate(["a", "b", "c"])}
    out = io.BytesIO()
    w = Writer(out, 0o755)
    for name in ("c", "a", "b"):  # (a writer sends them in name order; a peer may not)
        w.file(name, 0o644, len(data[name]))
        w.piece(0, memoryview(data[name]))
    w.folder("z", 0o755)
    w.up()
    w.folder("y", 0o755)
    w.end()
    reference = tmp_path / "reference"
    reference.mkdir()
    for name, content in data.items():
        (reference / name).write_bytes(content)
    (reference / "y").mkdir()
    (reference / "z").mkdir()
    digest = sealing.seal_tree(reference, modes=sealing.kept_mode).digest
    bounds = Bounds(size=sum(map(len, data.values())), data=1 << 20, files=3, entries=5)
    got = receive_tree(io.BytesIO(out.getvalue()), digest, tmp_path / "store", bounds)
    assert tree_digests.tree_digest(got)[0] == digest


def test_chunks_of_zeros_sent_as_data_count_as_zeros(tmp_path: Path) -> None:
    content = os.urandom(CHUNK) + bytes(2 * CHUNK) + os.urandom(10)
    out = io.BytesIO()
    w = Writer(out, 0o755)
    w.file("f", 0o644, len(content))
    w.piece(0, memoryview(content))  # (a writer would have left the zeros out)
    w.end()
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "f").write_bytes(content)
    sealed = sealing.seal_tree(reference, modes=sealing.kept_mode)
    bounds = Bounds(size=len(content), data=len(content), files=1, entries=1)
    store = tmp_path / "store"
    receive_tree(io.BytesIO(out.getvalue()), sealed.digest, store, bounds)
    assert keeping.read_record(store, sealed.digest) == Bounds.of(sealed)  # (data: CHUNK + 10)


@pytest.mark.parametrize("link", [False, True])
def test_a_line_break_in_a_name_or_a_link_is_refused(tmp_path: Path, link: bool) -> None:
    out = io.BytesIO()
    w = Writer(out, 0o755)
    if link:
        w.link("l", "a\nb")
    else:
        w.file("a\nb", 0o644, 0)
    w.end()
    store = tmp_path / "store"
    with pytest.raises(TreeError, match="line break"):
        receive_tree(io.BytesIO(out.getvalue()), "0" * 64, store, Bounds(0, 0, 1, 1))
    assert [p.name for p in store.iterdir()] == [".incoming"]
    assert not any((store / ".incoming").iterdir())


def test_a_piece_is_read_into_its_buffer_from_a_reader_that_can(tmp_path: Path) -> None:
    payload = os.urandom(3 * CHUNK)
    out = io.BytesIO()
    w = Writer(out, 0o755)
    w.file("f", 0o644, len(payload))
    w.piece(0, memoryview(payload))
    w.end()
    reader = Reader(io.BufferedReader(io.BytesIO(out.getvalue()), 17))
    assert reader.kind() == b"F"
    reader.mode(), reader.name(), reader.number(8)
    assert reader.kind() == b"P"
    offset, length = reader.number(8), reader.number(4)
    into = memoryview(bytearray(length))
    reader.take_into(into, "data")
    assert (offset, bytes(into)) == (0, payload)
    assert reader.kind() == b"E"


def test_the_hasher_gives_the_digest_of_the_file_however_its_data_comes(tmp_path: Path) -> None:
    rng = random.Random(3)
    for size in (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 3, 40 * CHUNK):
        data = bytearray(rng.randbytes(size))
        for start in range(0, size, CHUNK):
            if rng.random() < 0.3:
                data[start : start + CHUNK] = bytes(len(data[start : start + CHUNK]))
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            want = content_digest.digest(fd)
        finally:
            os.close(fd)
        hasher = Hasher(size)
        offset = 0
        while offset < size:
            length = min(rng.randrange(1, 9) * CHUNK, size - offset)
            hasher.update(offset, memoryview(data)[offset : offset + length])
            offset += length
        assert hasher.result() == want
    with pytest.raises(ValueError):
        Hasher(4 * CHUNK).update(CHUNK + 1, memoryview(bytes(CHUNK)))
