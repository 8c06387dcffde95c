"""The reconcile loop end to end on the fake runtime (no Docker)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from dockyard.backends.local.ports import local_ports
from dockyard.errors import ImageError, PlanError, RunFailed
from dockyard.events import Event
from dockyard.execution import Executor, RunOptions
from dockyard.report.summary import load_summary
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime, Fault
from tests.conftest import WritePipeline

IMAGE = "busybox:1.36"
RUN_NUMBERS = itertools.count(1)


def execute(
    path: Path, runtime: FakeRuntime, *, params: Sequence[str] = (), **options: object
) -> tuple[str, Store, list[Event]]:
    pf = load_pipeline(path, params=params)
    store = Store(pf.state_dir / "state.db")
    events: list[Event] = []
    executor = Executor(
        pf,
        runtime,
        store,
        ports=local_ports(pf),
        options=RunOptions(**options),  # type: ignore[arg-type]
        reporter=events.append,
        new_id=lambda: f"run{next(RUN_NUMBERS)}",
    )
    try:
        run_id = executor.run()
    except RunFailed as exc:
        run_id = exc.run_id
    return run_id, store, events


@pytest.fixture
def runtime() -> FakeRuntime:
    fake = FakeRuntime(cpus=2, memory=4 * 1024**3)
    fake.add_image(IMAGE)
    return fake


DIAMOND = """
    version: 1
    name: diamond
    defaults: {image: busybox:1.36, resources: {cpus: 0.5, memory: 32m}}
    steps:
      a: {command: "echo A > /out/a"}
      b:
        needs: [a]
        scatter: {s: [x, y]}
        command: "cat /in/a/a > /out/v && echo ${s} >> /out/v"
      c: {needs: [a], command: "echo C > /out/c"}
      d: {needs: [b, c], command: "cat /in/b/x/v /in/b/y/v /in/c/c > /out/all"}
"""


def output(store: Store, run_id: str, instance: str) -> Path:
    row = next(r for r in store.instances(run_id) if r.instance == instance)
    assert row.output is not None
    path = store.output_path(row.output)
    assert path is not None
    return Path(path)


def test_diamond_flows_outputs_through_to_the_gather(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    run_id, store, _ = execute(write_pipeline(DIAMOND), runtime)
    assert (output(store, run_id, "d") / "all").read_text() == "A\nx\nA\ny\nC\n"
    assert {r.state for r in store.instances(run_id)} == {"succeeded"}
    assert store.run(run_id).state == "succeeded"


def test_no_container_remains_after_a_run(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    execute(write_pipeline(DIAMOND), runtime)
    assert runtime.containers == {}
    assert len(runtime.started) == 5


def test_concurrency_never_exceeds_the_pool(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    runtime.time_scale = 0.05
    path = write_pipeline("""
        version: 1
        name: wide
        defaults: {image: busybox:1.36, resources: {cpus: 1, memory: 32m}}
        steps:
          w: {scatter: {i: ["1", "2", "3", "4", "5", "6"]}, command: "sleep 1"}
    """)
    execute(path, runtime, max_cpus=2)
    assert runtime.max_running == 2


def test_failed_step_fails_the_run_and_blocks_downstream(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline(
        DIAMOND.replace(
            'c: {needs: [a], command: "echo C > /out/c"}', 'c: {needs: [a], command: "exit 3"}'
        )
    )
    run_id, store, _ = execute(path, runtime)
    states = {r.instance: (r.state, r.reason) for r in store.instances(run_id)}
    assert states["c"] == ("failed", "exited with status 3")
    assert states["d"] == ("blocked", "upstream c failed")
    assert store.run(run_id).state == "failed"
    assert store.attempts(run_id, "c")[0].exit_code == 3


def test_failed_attempt_commits_nothing(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline("""
        version: 1
        name: partial
        steps:
          a: {image: busybox:1.36, command: "echo half > /out/x && exit 1"}
    """)
    run_id, store, _ = execute(path, runtime)
    assert store.instances(run_id)[0].output is None
    outputs = path.parent / ".dockyard" / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir())
    assert not (path.parent / ".dockyard" / "work" / run_id).exists()


def test_retry_after_a_crash_succeeds_with_two_attempts(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    runtime.inject("a", Fault(exit_code=1))
    path = write_pipeline("""
        version: 1
        name: retry
        steps:
          a: {image: busybox:1.36, command: "echo ok > /out/x", retries: 1}
    """)
    run_id, store, events = execute(path, runtime)
    assert [a.state for a in store.attempts(run_id, "a")] == ["failed", "succeeded"]
    assert [e.kind for e in events if e.instance == "a"] == [
        "started",
        "retrying",
        "started",
        "succeeded",
    ]


def test_out_of_memory_retry_gets_more_memory(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    runtime.inject("a", Fault(oom=True))
    path = write_pipeline("""
        version: 1
        name: oom
        steps:
          a:
            image: busybox:1.36
            command: "true"
            resources: {memory: 64m}
            retries: {max: 1, memory_factor: 4}
    """)
    run_id, store, _ = execute(path, runtime)
    attempts = store.attempts(run_id, "a")
    assert [(a.reason, a.memory) for a in attempts] == [
        ("out-of-memory", 64 * 1024**2),
        ("exited", 256 * 1024**2),
    ]


def test_timeout_is_reported_as_such(write_pipeline: WritePipeline, runtime: FakeRuntime) -> None:
    path = write_pipeline("""
        version: 1
        name: slow
        steps:
          a: {image: busybox:1.36, command: "sleep 100", timeout: 1s}
    """)
    run_id, store, _ = execute(path, runtime)
    assert store.attempts(run_id, "a")[0].reason == "timed-out"
    assert load_summary(store, run_id).instances[0].row.reason == "timed out"


def test_step_larger_than_the_pool_is_refused_before_anything_starts(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline("""
        version: 1
        name: huge
        steps:
          a: {image: busybox:1.36, command: "true", resources: {cpus: 4}}
    """)
    with pytest.raises(PlanError, match="asks for 4 CPUs"):
        execute(path, runtime)
    assert runtime.started == []


def test_missing_image_is_invalid_input(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline("""
        version: 1
        name: noimage
        steps:
          a: {image: "nowhere/none:1", command: "true"}
    """)
    with pytest.raises(ImageError, match="nowhere/none:1"):
        execute(path, runtime)
    assert runtime.started == []


SERVICE = """
    version: 1
    name: withdb
    services:
      db: {image: busybox:1.36, command: "sleep 1000", resources: {cpus: 0.5, memory: 64m}}
    steps:
      load: {image: busybox:1.36, services: [db], command: "echo loaded > /out/x"}
      query: {image: busybox:1.36, services: [db], needs: [load], command: "echo ok > /out/y"}
"""


def test_a_service_starts_once_for_its_steps_and_is_removed_after(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    run_id, store, _ = execute(write_pipeline(SERVICE), runtime)
    assert store.run(run_id).state == "succeeded"
    assert runtime.started_instances.count("") == 1  # the service (no instance label)
    assert runtime.containers == {}
    assert runtime.network_names == {}


def test_a_service_starts_before_the_steps_that_precede_its_users_unless_all_are_cached(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline(
        """
        version: 1
        name: early
        services:
          db: {image: busybox:1.36, command: "sleep 1000", resources: {cpus: 0.5, memory: 64m}}
        steps:
          make: {image: busybox:1.36, command: "echo rows > /out/rows"}
          load: {image: busybox:1.36, services: [db], needs: [make], command: "echo ok > /out/x"}
        """
    )
    execute(path, runtime)
    assert runtime.started_instances == ["", "make", "load"]  # "": the service
    execute(path, runtime)  # everything cached: nothing to start the database for
    assert runtime.started_instances == ["", "make", "load"]


def test_a_service_that_dies_fails_the_steps_that_need_it(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline(SERVICE.replace('command: "sleep 1000"', 'command: "exit 3"'))
    run_id, store, _ = execute(path, runtime)
    reasons = {r.instance: r.reason for r in store.instances(run_id)}
    assert reasons["load"] == "service 'db' exited before it was ready"
    assert store.run(run_id).state == "failed"
    assert runtime.containers == {}


def test_streamed_chain_larger_than_the_pool_is_refused(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline("""
        version: 1
        name: widechain
        defaults: {image: busybox:1.36, resources: {cpus: 1.5}}
        steps:
          gen: {command: "echo hi"}
          count: {stdin: gen, command: "wc -c"}
    """)
    with pytest.raises(PlanError, match=re.escape("streamed chain gen | count")):
        execute(path, runtime)


def test_second_run_of_the_same_pipeline_is_refused_while_one_holds_the_lock(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    from dockyard.state.lock import RunLock

    path = write_pipeline(DIAMOND)
    with RunLock(path.parent / ".dockyard"), pytest.raises(PlanError, match="in progress"):
        execute(path, runtime)


def test_a_cached_volume_writer_holds_only_while_its_volume_holds_what_it_left(
    write_pipeline: WritePipeline,
    runtime: FakeRuntime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dockyard.disk.volumes import VolumeStore

    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    path = write_pipeline(
        """
        version: 1
        name: writer
        defaults: {image: busybox:1.36, resources: {cpus: 0.5, memory: 32m}}
        volumes: {idx: {}}
        steps:
          build: {volumes: {idx: /idx}, cache: true, command: "echo built > /idx/index"}
          use:
            needs: [build]
            volumes: {idx: {path: /idx, readonly: true}}
            command: "cat /idx/index > /out/seen"
        """
    )

    def cached() -> dict[str, int]:
        run_id, store, _ = execute(path, runtime)
        return {r.instance: r.cached for r in store.instances(run_id)}

    assert cached() == {"build": 0, "use": 0}
    assert cached() == {"build": 1, "use": 1}
    (VolumeStore().live("idx") / "index").unlink()  # someone emptied the volume
    assert cached() == {"build": 0, "use": 1}  # the same content again: its reader holds


def test_a_kept_service_is_replaced_by_the_next_run_not_mistaken_for_a_step(
    write_pipeline: WritePipeline, runtime: FakeRuntime
) -> None:
    path = write_pipeline(SERVICE.replace("resources: {cpus: 0.5, memory: 64m}}", "keep: true}"))
    first, store, _ = execute(path, runtime)
    assert store.run(first).state == "succeeded"
    (kept,) = runtime.containers.values()  # the service stays up after its run
    second, store, _ = execute(path, runtime, no_cache=True)
    assert store.run(second).state == "succeeded"
    assert kept.id not in runtime.containers  # replaced by the second run's own
    assert len(runtime.containers) == 1
