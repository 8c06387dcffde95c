"""Cached resume on the fake runtime: a rerun does only what changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.state.hashing import InputHasher
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime, Fault
from tests.conftest import WritePipeline
from tests.unit.test_engine_fake import IMAGE, execute

PIPELINE = """
    version: 1
    name: cached
    defaults: {image: busybox:1.36, resources: {cpus: 0.5, memory: 32m}}
    steps:
      per-file:
        scatter: {f: {glob: "data/*.txt"}}
        inputs: {file: "./data/${f}"}     # only its own file: a change elsewhere is no change
        command: "cat /in/file > /out/copy"
      other: {command: "echo independent > /out/x"}
      gather:
        needs: [per-file]
        command: "cat /in/per-file/a.txt/copy /in/per-file/b.txt/copy > /out/all"
"""


@pytest.fixture
def runtime() -> FakeRuntime:
    fake = FakeRuntime()
    fake.add_image(IMAGE)
    return fake


@pytest.fixture
def pipeline(write_pipeline: WritePipeline) -> Path:
    path = write_pipeline(PIPELINE)
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("A\n")
    (path.parent / "data" / "b.txt").write_text("B\n")
    return path


def test_unchanged_rerun_starts_no_container(pipeline: Path, runtime: FakeRuntime) -> None:
    execute(pipeline, runtime)
    before = len(runtime.started)
    run_id, store, events = execute(pipeline, runtime)
    assert len(runtime.started) == before
    assert all(row.cached and row.state == "succeeded" for row in store.instances(run_id))
    assert [e.kind for e in events].count("cached") == 4


def test_changed_input_reruns_only_what_depends_on_it(pipeline: Path, runtime: FakeRuntime) -> None:
    execute(pipeline, runtime)
    before = len(runtime.started)
    (pipeline.parent / "data" / "b.txt").write_text("B changed\n")
    run_id, store, _ = execute(pipeline, runtime)
    assert sorted(runtime.started_instances[before:]) == ["gather", "per-file[b.txt]"]
    cached = {row.instance for row in store.instances(run_id) if row.cached}
    assert cached == {"per-file[a.txt]", "other"}


def test_no_cache_reruns_everything(pipeline: Path, runtime: FakeRuntime) -> None:
    execute(pipeline, runtime)
    before = len(runtime.started)
    execute(pipeline, runtime, no_cache=True)
    assert len(runtime.started) - before == 4


def test_failed_instance_is_not_cached(write_pipeline: WritePipeline, runtime: FakeRuntime) -> None:
    path = write_pipeline("""
        version: 1
        name: flaky
        steps:
          a: {image: busybox:1.36, command: "echo ok > /out/x"}
    """)
    runtime.inject("a", Fault(exit_code=2))
    execute(path, runtime)
    run_id, store, _ = execute(path, runtime)
    row = store.instances(run_id)[0]
    assert (row.state, row.cached) == ("succeeded", False)


def test_step_that_opts_out_is_never_cached(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline("""
        version: 1
        name: optout
        steps:
          a: {image: busybox:1.36, command: "echo ok > /out/x", cache: false}
    """)
    execute(path, runtime)
    execute(path, runtime)
    assert len(runtime.started) == 2


def test_changed_command_is_a_new_key(write_pipeline: WritePipeline, runtime: FakeRuntime) -> None:
    path = write_pipeline(PIPELINE.replace("/out/x", "/out/y"))
    (path.parent / "data").mkdir()
    (path.parent / "data" / "a.txt").write_text("A\n")
    (path.parent / "data" / "b.txt").write_text("B\n")
    execute(path, runtime)
    path.write_text(path.read_text().replace("echo independent", "echo changed"))
    before = len(runtime.started)
    execute(path, runtime)
    assert runtime.started_instances[before:] == ["other"]


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    data = tmp_path / "big.bin"
    data.write_bytes(b"x" * 4096)
    old = os.stat(data)
    os.utime(data, ns=(old.st_atime_ns, old.st_mtime_ns - 10**10))  # not "racy": 10 s old
    first = InputHasher(store)
    digest = first.digest(data)
    first.flush()
    # Same size, mtime and inode, other bytes: only a re-read could notice.
    stamp = os.stat(data)
    with data.open("r+b") as fh:
        fh.write(b"y")
    os.utime(data, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert InputHasher(store).digest(data) == digest
    os.utime(data, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    assert InputHasher(store).digest(data) != digest
    store.close()
