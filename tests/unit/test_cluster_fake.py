"""A run on several nodes, on the fake runtime: a node that goes down has its attempts rerun
elsewhere without using a retry, and work that fits no node that is up waits for one.

The same happens on a real Swarm in tests/integration/test_swarm_docker.py; here the run
loop's part (watching the nodes, telling the planner) is pinned down without Docker.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dockyard.backends.local.ports import LocalVolumes, local_ports
from dockyard.disk.kept import Staging, StoredOutput
from dockyard.disk.sealing import Sealed
from dockyard.execution import Executor, Ports
from dockyard.execution.services import LABEL_SERVICE
from dockyard.runtime.base import HostCapacity, Node
from dockyard.spec import load_pipeline
from dockyard.state.store import Store
from dockyard.testing import FakeOutputs, FakeRuntime, FakeWorkspace, Fault
from tests.unit.test_engine_fake import IMAGE
from tests.unit.test_recovery import write

GIB = 1024**3


def cluster(*cpus: float) -> FakeRuntime:
    runtime = FakeRuntime(
        cluster=[Node(f"n{i}", f"node{i}", HostCapacity(c, 4 * GIB)) for i, c in enumerate(cpus)]
    )
    runtime.add_image(IMAGE)
    return runtime


def run(path: Path, runtime: FakeRuntime) -> Store:
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    Executor(pf, runtime, store, ports=local_ports(pf), new_id=lambda: "r1").run()
    return store


def test_a_node_that_goes_down_has_its_attempt_rerun_on_another_without_a_retry(
    tmp_path: Path,
) -> None:
    runtime = cluster(1, 1)
    runtime.inject("w[a]", Fault(node_down=True))
    path = write(
        tmp_path,
        f"""
version: 1
name: two-nodes
defaults: {{image: {IMAGE}, resources: {{cpus: 1, memory: 16m}}, retries: 0}}
steps:
  w: {{scatter: {{v: [a, b]}}, command: "echo ${{v}} > /out/v"}}
""",
    )
    store = run(path, runtime)
    attempts = store.attempts("r1", "w[a]")
    assert [(a.state, a.reason) for a in attempts] == [("lost", "lost"), ("succeeded", "exited")]
    assert attempts[0].node != attempts[1].node  # not again on the node that is down
    assert "went down" in (attempts[0].detail or "")
    assert store.run("r1").state == "succeeded"


def test_work_that_fits_only_a_node_that_is_down_waits_for_it_to_return(tmp_path: Path) -> None:
    runtime = cluster(2, 1)  # only n0 has room for a 2-CPU step
    runtime.inject("big", Fault(node_down=True))
    path = write(
        tmp_path,
        f"""
version: 1
name: wait-for-node
defaults: {{image: {IMAGE}, resources: {{cpus: 2, memory: 16m}}, retries: 0}}
steps:
  big: {{command: "echo done > /out/v"}}
""",
    )
    back = threading.Timer(0.5, runtime.set_node_state, args=("n0", "ready"))
    back.start()
    try:
        store = run(path, runtime)
    finally:
        back.cancel()
    assert [(a.state, a.node) for a in store.attempts("r1", "big")] == [
        ("lost", "n0"),
        ("succeeded", "n0"),
    ]
    assert store.run("r1").state == "succeeded"


def test_an_output_kept_only_on_a_node_that_went_down_is_made_again_for_its_reader(
    tmp_path: Path,
) -> None:
    """``first`` commits on n0, then n0 goes down with its disk: ``second`` cannot get that
    output anywhere, so ``first`` runs again (on n1), and then ``second``; none of it is held
    against a retry."""
    runtime = cluster(1, 1)
    path = write(
        tmp_path,
        f"""
version: 1
name: lost-output
defaults: {{image: {IMAGE}, resources: {{cpus: 1, memory: 16m}}, retries: 0}}
steps:
  first: {{command: "echo one > /out/v"}}
  second: {{needs: [first], command: "cat /in/first/v > /out/v"}}
""",
    )
    pf = load_pipeline(path)
    disks = tmp_path / "disks"

    class LosingOutputs(FakeOutputs):
        def commit(self, staging: Staging, sealed: Sealed) -> StoredOutput:
            stored = super().commit(staging, sealed)
            if staging.path.name.startswith("first.1"):  # its node dies, its disk with it
                runtime.set_node_state(staging.node, "down")
                self.forget(staging.node)
            return stored

    ports = Ports(LosingOutputs(disks), FakeWorkspace(disks), LocalVolumes())
    store = Store(pf.state_dir / "state.db")
    Executor(pf, runtime, store, new_id=lambda: "r1", ports=ports).run()
    first = store.attempts("r1", "first")
    assert [(a.state, a.node) for a in first] == [("succeeded", "n0"), ("succeeded", "n1")]
    second = store.attempts("r1", "second")
    assert [(a.state, a.node) for a in second][-1] == ("succeeded", "n1")
    assert [a.state for a in second[:-1]] == ["lost"]  # could not get first's output
    assert "no node has output" in (second[0].detail or "")
    assert store.run("r1").state == "succeeded"
    assert ("output-lost", "first") in {(kind, who) for _, kind, who, _ in store.events("r1")}


def test_a_service_whose_node_goes_down_is_started_again_on_another(tmp_path: Path) -> None:
    """The services sit on the first node; ``load`` runs there too and the node goes down
    as it starts: the attempt is lost, and before it runs again its services are started
    anew on the other node, which then takes the services' reservation."""
    runtime = cluster(2, 2)
    runtime.inject("load", Fault(node_down=True))
    path = write(
        tmp_path,
        f"""
version: 1
name: moved-service
services:
  db: {{image: {IMAGE}, command: "sleep 1000", resources: {{cpus: 0.25, memory: 16m}}}}
  cache: {{image: {IMAGE}, command: "sleep 1000", resources: {{cpus: 0.25, memory: 16m}}}}
steps:
  load:
    image: {IMAGE}
    services: [db, cache]
    resources: {{cpus: 1, memory: 16m}}
    retries: 0
    command: "echo loaded > /out/x"
""",
    )
    store = run(path, runtime)
    assert [(a.state, a.node) for a in store.attempts("r1", "load")] == [
        ("lost", "n0"),
        ("succeeded", "n1"),
    ]
    services = [spec for spec in runtime.created if spec.labels.get(LABEL_SERVICE)]
    assert [s.node for s in services] == ["n0", "n0", "n1", "n1"]  # both moved, together
    assert store.run("r1").state == "succeeded"
