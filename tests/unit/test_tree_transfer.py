"""Trees between agents (dockyard.agent.trees): holes stay holes, a stream stops at what
the seal counted, and depth costs nothing per entry, within the limits an output has."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from dockyard.agent.tree_wire import MAGIC, TreeError
from dockyard.agent.trees import Bounds, read_record, receive_tree, write_lone_file, write_tree
from dockyard.disk import keeping, safefs, sealing
from dockyard.disk.content_digest import CHUNK
from dockyard.disk.tree_limits import Limits, OutputRefused
from dockyard.disk.volume_stream import receive, send
from dockyard.disk.volumes import VolumeStore
from dockyard.testing import FakeOutputs
from dockyard.testing.fake_storage import FakeWorkspace

GiB = 1 << 30
SMALL = 1 << 20  # allocated bytes that count as "a few small extents"


def _sparse_output(folder: Path) -> Path:
    """A step's /out with a 64 GiB file of three small extents, and a plain one."""
    folder.mkdir(parents=True)
    with (folder / "z").open("wb") as fh:
        fh.truncate(64 * GiB)
        for offset in (0, 17 * GiB + 5, 64 * GiB - 10):
            fh.seek(offset)
            fh.write(b"data")
    (folder / "sub").mkdir()
    (folder / "sub" / "plain.txt").write_text("hello\n")
    return folder


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


class Counted(io.RawIOBase):
    """A source that counts what was read from it (as a socket would have sent it)."""

    def __init__(self, data: bytes):
        self.inner = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.read_bytes += len(data)
        return data


def test_a_sparse_output_seals_and_transfers_with_its_holes(tmp_path: Path) -> None:
    staging = _sparse_output(tmp_path / "staging")
    sealed = sealing.seal_tree(staging)
    assert (sealed.size, sealed.files, sealed.entries) == (64 * GiB + 6, 2, 3)
    assert sealed.data == 3 * CHUNK + 6
    assert _allocated(staging / "z") < SMALL
    kept = keeping.keep(staging, sealed, tmp_path / "a" / "outputs")

    out = io.BytesIO()
    write_tree(kept, out)
    assert len(out.getvalue()) < sealed.data + 4096  # the holes were not sent
    store = tmp_path / "b" / "outputs"
    got = receive_tree(io.BytesIO(out.getvalue()), sealed.digest, store, Bounds.of(sealed))
    assert got == store / sealed.digest
    assert (got / "z").stat().st_size == 64 * GiB and _allocated(got / "z") < SMALL
    with (got / "z").open("rb") as fh:
        fh.seek(17 * GiB + 5)
        assert fh.read(4) == b"data"
    assert sealing.tree_digest(got)[0] == sealed.digest
    assert read_record(store, sealed.digest) == Bounds.of(sealed)  # (for who fetches it next)


def test_a_dense_copy_of_the_same_bytes_has_the_same_digest(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    with (sparse / "f").open("wb") as fh:
        fh.truncate(5 * CHUNK + 3)
        fh.seek(2 * CHUNK - 1)
        fh.write(b"xy")
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "f").write_bytes((sparse / "f").read_bytes())
    assert sealing.seal_tree(sparse).digest == sealing.seal_tree(dense).digest


def test_a_lone_file_travels_sparse(tmp_path: Path) -> None:
    path = tmp_path / "ref.img"
    with path.open("wb") as fh:
        fh.truncate(8 * GiB)
        fh.write(b"x")
    got = _lone_file_received(path, tmp_path / "store", Bounds(8 * GiB, CHUNK, 1, 1))
    assert _allocated(got / sealing.LONE_FILE) < SMALL


def _lone_file_received(path: Path, store: Path, bounds: Bounds) -> Path:
    """The file at ``path`` sent as a lone file's tree, and kept in ``store``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        digest = sealing.lone_file_digest(fd)
        out = io.BytesIO()
        write_lone_file(fd, out)
    finally:
        os.close(fd)
    return receive_tree(io.BytesIO(out.getvalue()), digest, store, bounds)


def _stream_of(tmp_path: Path, files: dict[str, bytes]) -> tuple[bytes, sealing.Sealed]:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, data in files.items():
        (tree / name).write_bytes(data)
    sealed = sealing.seal_tree(tree)
    out = io.BytesIO()
    write_tree(tree, out)
    return out.getvalue(), sealed


def test_a_stream_that_carries_more_data_than_its_seal_counted_stops_there(
    tmp_path: Path,
) -> None:
    data, sealed = _stream_of(tmp_path, {"big": os.urandom(32 << 20)})
    bounds = Bounds(sealed.size, 1 << 20, 1, 1)  # the seal said: one MiB of data
    source = Counted(data)
    with pytest.raises(TreeError, match="more data than it holds"):
        receive_tree(source, sealed.digest, tmp_path / "store", bounds)
    assert source.read_bytes < (1 << 20) + (2 << 20)  # not the 32 MiB sent
    assert not list((tmp_path / "store" / ".incoming").iterdir())


def test_a_sparse_file_rewritten_dense_on_the_way_is_refused_at_once(tmp_path: Path) -> None:
    """The seal counted 4 bytes of data in a 64 GiB file; a stream that fills its holes
    stops being read just past them (the stream is made as it is read: it is 64 GiB)."""
    sealed = Bounds(size=64 * GiB, data=CHUNK, files=1, entries=1)

    class Hostile(io.RawIOBase):
        def __init__(self) -> None:
            self.read_bytes = 0
            self.head = MAGIC + b"\x01\xed" + b"F\x01\xa4\x01z" + (64 * GiB).to_bytes(8, "big")
            self.offset = 0

        def read(self, size: int = -1) -> bytes:
            if self.head:
                data, self.head = self.head, b""
            else:
                data = b"P" + self.offset.to_bytes(8, "big") + (1 << 20).to_bytes(4, "big")
                data += b"\xff" * (1 << 20)
                self.offset += 1 << 20
            self.read_bytes += len(data)
            return data

    source = Hostile()
    with pytest.raises(TreeError, match="more data than it holds"):
        receive_tree(source, "0" * 64, tmp_path / "store", sealed)
    assert source.read_bytes < 4 << 20


@pytest.mark.parametrize(
    ("bounds", "why"),
    [
        (Bounds(1000, 1 << 30, 9, 9), "holds less than this stream says"),  # logical size
        (Bounds(1 << 30, 1 << 30, 1, 9), "holds less than this stream says"),  # files
        (Bounds(1 << 30, 1 << 30, 9, 1), "more than its 1 entries"),
    ],
    ids=["size", "files", "entries"],
)
def test_a_stream_past_its_bounds_is_refused_before_its_data_is_read(
    tmp_path: Path, bounds: Bounds, why: str
) -> None:
    data, sealed = _stream_of(tmp_path, {"a": b"x" * 3000, "b": os.urandom(8 << 20)})
    source = Counted(data)
    with pytest.raises(TreeError, match=why):
        receive_tree(source, sealed.digest, tmp_path / "store", bounds)
    assert source.read_bytes < 1 << 20


def _deep(root: Path, depth: int) -> None:
    """``depth`` nested folders under ``root`` and a file at the bottom, made by
    descriptors (the path is longer than a path may be)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def test_a_5000_deep_tree_transfers(tmp_path: Path) -> None:
    roomy = Limits(depth=10_000, path=100_000)
    tree = tmp_path / "deep"
    tree.mkdir()
    store = tmp_path / "store"
    try:
        _deep(tree, 5000)
        sealed = sealing.seal_tree(tree, roomy)
        assert sealed.entries == 5001
        out = io.BytesIO()
        write_tree(tree, out)
        assert len(out.getvalue()) < 100_000  # (a few bytes an entry, whatever the depth)
        kept = receive_tree(
            io.BytesIO(out.getvalue()), sealed.digest, store, Bounds.of(sealed), roomy
        )
        assert kept == store / sealed.digest
    finally:
        safefs.rmtree(tree)  # (pytest's own clean-up recurses: not 5,000 deep)
        safefs.rmtree(store)


def test_an_output_deeper_than_the_limit_is_refused_with_a_message(tmp_path: Path) -> None:
    deep, deepest = tmp_path / "deep", tmp_path / "deepest"
    try:
        for tree, depth in ((deep, 1000), (deepest, 1001)):
            tree.mkdir()
            _deep(tree, depth)
        assert sealing.seal_tree(deep).entries == 1001  # 1,000 levels, and a file
        with pytest.raises(OutputRefused, match="nests folders more than 1,000 deep"):
            sealing.seal_tree(deepest)
    finally:
        sealing.discard(deep)  # (pytest's own clean-up recurses: not 1,000 deep)
        sealing.discard(deepest)


def test_a_stream_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "deep"
    tree.mkdir()
    _deep(tree, 30)
    roomy = sealing.seal_tree(tree, Limits(depth=30))
    out = io.BytesIO()
    write_tree(tree, out)
    with pytest.raises(TreeError, match="more than 20 deep"):
        receive_tree(
            io.BytesIO(out.getvalue()), roomy.digest, tmp_path / "s", Bounds.of(roomy), Limits(20)
        )


def test_too_many_entries_or_too_long_a_path_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "wide"
    tree.mkdir()
    for n in range(11):
        (tree / f"f{n}").write_text("x")
    with pytest.raises(OutputRefused, match="more than 10 files, folders and links"):
        sealing.seal_tree(tree, Limits(entries=10))
    long = tmp_path / "long"
    long.mkdir()
    (long / ("n" * 200)).mkdir()
    (long / ("n" * 200) / ("m" * 200)).write_text("x")
    with pytest.raises(OutputRefused, match="a path of 401 bytes"):
        sealing.seal_tree(long, Limits(path=400))


def test_a_fake_fetch_keeps_holes(tmp_path: Path) -> None:
    outputs, workspace = FakeOutputs(tmp_path), FakeWorkspace(tmp_path)
    staging = workspace.staging("run", "step", 1, "n1")
    workspace.make(staging)
    with (staging.path / "z").open("wb") as fh:
        fh.truncate(8 * GiB)
    digest = outputs.commit(staging, outputs.seal(staging)).digest
    outputs.bring([digest], "n2")
    assert _allocated(Path(outputs.bind(digest, "n2")) / "z") < SMALL


def test_a_volume_keeps_a_sparse_file_sparse_through_snapshot_send_and_receive(
    tmp_path: Path,
) -> None:
    sender = VolumeStore(tmp_path / "a")
    live = sender.ensure("v")
    with (live / "disk.img").open("wb") as fh:
        fh.truncate(64 * GiB)
        fh.seek(40 * GiB)
        fh.write(b"boot")
    sender.snapshot("v")
    snapshot = sender.tree("v", sender.snapshots("v")[-1])
    assert _allocated(snapshot / "disk.img") < SMALL
    out = io.BytesIO()
    send(sender, "v", out)
    assert len(out.getvalue()) < SMALL
    receiver = VolumeStore(tmp_path / "b")
    receive(receiver, "v", io.BytesIO(out.getvalue()))
    got = receiver.live("v") / "disk.img"
    assert got.stat().st_size == 64 * GiB and _allocated(got) < SMALL
    kept = receiver.tree("v", receiver.snapshots("v")[-1]) / "disk.img"
    assert _allocated(kept) < SMALL


def test_an_output_refused_at_commit_fails_its_attempt_with_the_reason(tmp_path: Path) -> None:
    import queue

    from dockyard.disk.kept import Staging
    from dockyard.execution.attempts import AttemptRunner, Order, Result, outcome
    from dockyard.planning.actions import Reason
    from dockyard.planning.graph import InstanceId
    from dockyard.runtime.base import LABEL_INSTANCE, ContainerSpec
    from dockyard.runtime.patient import EngineGuard
    from dockyard.testing import FakeRuntime

    class Shallow(FakeOutputs):  # (as if the step nested a folder too deep)
        def seal(self, staging: Staging) -> sealing.Sealed:
            (staging.path / "nested").mkdir()
            return sealing.seal_tree(staging.path, Limits(depth=0))

    image = "sha256:" + "0" * 64
    runtime = FakeRuntime(time_scale=0.01, images={"busybox": image})
    results: queue.Queue = queue.Queue()
    guard = EngineGuard(runtime.ping, 60.0, clock=lambda: 0.0, sleep=lambda s: None)
    ports = (FakeWorkspace(tmp_path), Shallow(tmp_path))
    runner = AttemptRunner(runtime, guard, ports, results, clock=lambda: 0.0)
    iid = InstanceId("step")
    spec = ContainerSpec(image, ("sh", "-c", "true"), 1.0, 2**20, {LABEL_INSTANCE: "step"})
    staging = FakeWorkspace(tmp_path).staging("run-1", "step", 1, "local")
    order = Order(iid, 1, spec, None, None, staging, tmp_path / "log")
    worker = threading.Thread(target=runner.run, args=(order,))
    worker.start()
    result = results.get(timeout=30)
    assert isinstance(result, Result)
    result.ack.set()
    worker.join(timeout=30)
    seen = outcome(result)
    assert seen.reason is not Reason.LOST and not seen.ok
    assert "nests folders more than 0 deep" in seen.detail


def test_an_input_keeps_its_permission_bits_on_the_node_less_writing(tmp_path: Path) -> None:
    """A file only its owner may read on this machine is not world-readable on a node."""
    tree = tmp_path / "input"
    (tree / "private").mkdir(parents=True)
    (tree / "private" / "key").write_text("secret")
    (tree / "shared.txt").write_text("hello")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(tree / "private" / "key", 0o600)
    os.chmod(tree / "private", 0o700)
    os.chmod(tree / "shared.txt", 0o644)
    os.chmod(tree / "run.sh", 0o750)
    os.chmod(tree, 0o710)
    tally = sealing.tree_tally(tree)
    out = io.BytesIO()
    write_tree(tree, out)
    got = receive_tree(
        io.BytesIO(out.getvalue()), tally.digest, tmp_path / "store", Bounds.of(tally)
    )
    modes = {
        rel: os.lstat(got / rel).st_mode & 0o7777
        for rel in (".", "private", "private/key", "shared.txt", "run.sh")
    }
    assert modes == {
        ".": 0o510,
        "private": 0o500,
        "private/key": 0o400,
        "shared.txt": 0o444,
        "run.sh": 0o550,
    }

    lone = tmp_path / "lone"
    lone.write_text("secret")
    os.chmod(lone, 0o600)
    got = _lone_file_received(lone, tmp_path / "store", Bounds(6, 6, 1, 1))
    assert os.lstat(got / sealing.LONE_FILE).st_mode & 0o7777 == 0o400


def test_modes_count_in_the_digest_so_a_rewritten_mode_is_refused(tmp_path: Path) -> None:
    """The same bytes with other permission bits are another tree (each consumer sees what
    its producer left), and a mode rewritten on the way does not match its digest."""
    data, sealed = _stream_of(tmp_path, {"f": b"same"})
    private = tmp_path / "private"
    private.mkdir()
    (private / "f").write_bytes(b"same")
    os.chmod(private / "f", 0o600)
    assert sealing.tree_digest(private)[0] != sealed.digest
    assert sealing.tree_digest(tmp_path / "tree")[0] == sealed.digest  # (as sealed: 0444)
    rewritten = data.replace(b"F\x01\x24\x01f", b"F\x00\x00\x01f")  # 0444 -> 0000
    assert rewritten != data
    with pytest.raises(TreeError, match="the tree sent as"):
        receive_tree(io.BytesIO(rewritten), sealed.digest, tmp_path / "store", Bounds.of(sealed))


def test_a_piece_that_is_not_whole_chunks_is_refused(tmp_path: Path) -> None:
    """A writer sends whole 64 KiB chunks (the last of a file may be short): a stream of
    one-byte pieces would cost the receiver a write a byte."""
    head = MAGIC + (0o755).to_bytes(2, "big") + b"F" + (0o644).to_bytes(2, "big") + b"\x01f"
    head += (1 << 20).to_bytes(8, "big")
    piece = b"P" + (1).to_bytes(8, "big") + (1).to_bytes(4, "big") + b"x"
    stream = head + piece + b"E" + (2).to_bytes(8, "big")
    bounds = Bounds(1 << 20, 1 << 20, 1, 1)
    with pytest.raises(TreeError, match="not whole chunks"):
        receive_tree(io.BytesIO(stream), "0" * 64, tmp_path / "store", bounds)


def test_an_input_no_node_would_take_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """An input past the limits is refused here with its name, not by every node in turn
    (which would read as nodes that are unavailable)."""
    tree = tmp_path / "input"
    (tree / "a" / "b" / "c").mkdir(parents=True)
    for n in range(5):
        (tree / f"f{n}").write_text(str(n))
    with pytest.raises(OutputRefused, match=r"the input '.*input' nests folders more than 2"):
        sealing.tree_tally(tree, Limits(depth=2))
    with pytest.raises(OutputRefused, match=r"the input '.*input' has more than 4 files"):
        sealing.tree_tally(tree, Limits(entries=4))
    assert sealing.tree_tally(tree).entries == 8
