"""A run fed work while it goes on (as a CWL workflow feeds one), on the fake runtime:
what is handed over runs, what comes next is handed over once what it needs has ended,
each conclusion is reported back, a rerun is answered by the cache, and a run whose
handed-over work fits no node ends instead of waiting for ever.

The real thing (cwltool as the feeder, the real engine) is in
tests/integration/test_cwl_docker.py; here the loop's part is pinned down without Docker.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from dockyard.backends.local.ports import local_ports
from dockyard.cwl.document import cwl_pipeline_file
from dockyard.errors import RunFailed
from dockyard.execution import Executor
from dockyard.execution.feed import WAKE, Ended
from dockyard.planning.graph import Instance, InstanceId
from dockyard.runtime.base import HostCapacity, Node
from dockyard.spec.model import ImageSpec, Retries
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime
from tests.unit.test_engine_fake import IMAGE

MIB = 1024**2


def instance(name: str, script: str, cpus: float = 1.0) -> Instance:
    return Instance(
        id=InstanceId(name),
        bindings=(),
        image=ImageSpec.model_validate(IMAGE),
        command=("sh", "-c", script),
        env=(),
        inputs=(),
        upstream=(),
        cpus=cpus,
        memory=16 * MIB,
        retries=Retries(),
        timeout=None,
    )


class Chain:
    """Hands over ``first``; once it has ended, ``then``; closes once that has ended."""

    def __init__(self, images: dict[str, str], first: list[Instance], then: list[Instance]):
        self.images = images
        self.waves = [first, then]
        self.handed: list[Instance] = list(first)
        self.waiting = {i.id for i in first}
        self.ended_ones: list[Ended] = []
        self.lock = threading.Lock()
        self.wake = lambda: None

    def take(self) -> list[Instance]:
        with self.lock:
            taken, self.handed = self.handed, []
        return taken

    def open(self) -> bool:
        with self.lock:
            return bool(self.waiting or self.handed)

    def ended(self, ended: Ended) -> None:
        with self.lock:
            self.ended_ones.append(ended)
            self.waiting.discard(ended.instance)
            if not self.waiting and len(self.waves) > 1:
                self.waves.pop(0)
                self.handed = list(self.waves[0])
                self.waiting = {i.id for i in self.handed}
        self.wake()


def fed_run(
    tmp_path: Path, runtime: FakeRuntime, feed: Chain, run_id: str, **options: object
) -> Store:
    document = tmp_path / "fed.cwl"
    document.touch()
    pf = cwl_pipeline_file(document)
    store = Store(pf.state_dir / "state.db")
    executor = Executor(
        pf,
        runtime,
        store,
        ports=local_ports(pf),
        new_id=lambda: run_id,
        feed=feed,
        **options,  # type: ignore[arg-type]
    )
    feed.wake = lambda: executor.results.put(WAKE)
    executor.run()
    return store


def single_node(cpus: float = 2) -> FakeRuntime:
    runtime = FakeRuntime(cluster=[Node("n0", "node0", HostCapacity(cpus, 4 * 1024 * MIB))])
    runtime.add_image(IMAGE)
    return runtime


def test_work_handed_over_in_waves_runs_is_reported_and_a_rerun_is_cached(
    tmp_path: Path,
) -> None:
    runtime = single_node()
    images = {IMAGE: str(runtime.image_id(IMAGE))}

    def feed() -> Chain:
        first = [instance("a", "echo a > /out/v"), instance("b", "echo b > /out/v")]
        return Chain(images, first, [instance("c", "echo c > /out/v")])

    first = feed()
    store = fed_run(tmp_path, runtime, first, "r1")
    assert [e.instance.step for e in first.ended_ones][-1] == "c"  # after a and b
    assert {e.instance.step for e in first.ended_ones} == {"a", "b", "c"}
    assert all(e.output and e.exit_code == 0 and not e.cached for e in first.ended_ones)
    assert [r.instance for r in store.instances("r1")] == ["a", "b", "c"]
    assert store.run("r1").state == "succeeded"
    assert IMAGE in (store.run("r1").images or "")  # (resolved as the work came: at the end)

    again = feed()
    store = fed_run(tmp_path, runtime, again, "r2")
    assert all(e.cached and e.exit_code == 0 for e in again.ended_ones)
    assert {e.output for e in again.ended_ones} == {e.output for e in first.ended_ones}


def test_a_failure_is_reported_with_its_exit_status_and_fails_the_run(tmp_path: Path) -> None:
    runtime = single_node()
    feed = Chain({IMAGE: str(runtime.image_id(IMAGE))}, [instance("bad", "exit 3")], [])
    with pytest.raises(RunFailed):
        fed_run(tmp_path, runtime, feed, "r1")
    (ended,) = feed.ended_ones
    assert ended.output is None and ended.exit_code == 3


def test_work_that_fits_no_node_ends_the_run_after_the_wait_for_nodes(tmp_path: Path) -> None:
    runtime = FakeRuntime(
        cluster=[Node(f"n{i}", f"node{i}", HostCapacity(1, 4 * 1024 * MIB)) for i in range(2)]
    )
    runtime.add_image(IMAGE)
    feed = Chain({IMAGE: str(runtime.image_id(IMAGE))}, [instance("big", "true", cpus=2)], [])
    ticks = itertools.count()
    began = time.monotonic()
    with pytest.raises(RunFailed) as failed:  # (the feed is still open: "big" never ran)
        # a clock that runs a minute per look: the five minutes' wait pass in a moment
        fed_run(tmp_path, runtime, feed, "r1", clock=lambda: began + 60.0 * next(ticks))
    assert failed.value.failed == ["big"]
    assert feed.ended_ones == []
    store = Store(tmp_path / ".dockyard" / "state.db")
    assert store.instances("r1")[0].reason == "never fitted into the pool"
