"""What a pipeline file says about limits reaches the container: pids and capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dockyard.backends.local.ports import local_ports
from dockyard.execution import Executor, RunOptions
from dockyard.planning.graph import InstanceId
from dockyard.planning.preflight import graph_of
from dockyard.runtime.base import ContainerSpec
from dockyard.spec import load_pipeline
from dockyard.spec.model import DEFAULT_PIDS
from dockyard.state.store import Store
from dockyard.testing import FakeRuntime
from tests.conftest import WritePipeline

LIMITS = """
    version: 1
    name: limits
    defaults:
      image: busybox:1.36
      resources: {cpus: 0.5, memory: 32m, pids: 100}
      cap_add: [net_raw]
    services:
      db:
        image: busybox:1.36
        command: "sleep 60"
        resources: {cpus: 0.1, memory: 16m, pids: 64}
        cap_add: [CAP_SYS_NICE]
    steps:
      plain: {command: "true"}
      own: {command: "true", resources: {pids: 512}, cap_add: []}
      user: {command: "true", services: [db]}
"""


@dataclass
class Recording(FakeRuntime):
    specs: list[ContainerSpec] = field(default_factory=list)

    def create(self, spec: ContainerSpec) -> str:
        self.specs.append(spec)
        return super().create(spec)


def test_pids_and_capabilities_come_from_the_step_or_the_defaults(
    write_pipeline: WritePipeline,
) -> None:
    pf = load_pipeline(write_pipeline(LIMITS))
    graph = graph_of(pf)
    plain, own = graph.instances[InstanceId("plain")], graph.instances[InstanceId("own")]
    assert (plain.pids, plain.cap_add) == (100, ("NET_RAW",))
    assert (own.pids, own.cap_add) == (512, ())  # resources replace the defaults' whole
    service = pf.pipeline.services["db"]
    assert (service.resources.pids, service.cap_add) == (64, ["SYS_NICE"])


def test_a_step_without_resources_gets_the_default_process_limit(
    write_pipeline: WritePipeline,
) -> None:
    pf = load_pipeline(write_pipeline("version: 1\nname: d\nsteps:\n  a: {command: 'true'}\n"))
    instance = graph_of(pf).instances[InstanceId("a")]
    assert (instance.pids, instance.cap_add) == (DEFAULT_PIDS, ())


def run(path: Path, runtime: FakeRuntime) -> None:
    pf = load_pipeline(path)
    store = Store(pf.state_dir / "state.db")
    try:
        Executor(
            pf, runtime, store, ports=local_ports(pf), options=RunOptions(), new_id=lambda: "run1"
        ).run()
    finally:
        store.close()


def test_containers_are_made_with_their_limits(write_pipeline: WritePipeline) -> None:
    runtime = Recording()
    runtime.add_image("busybox:1.36")
    run(write_pipeline(LIMITS), runtime)
    made = {spec.labels.get("dockyard.instance", spec.name or ""): spec for spec in runtime.specs}
    assert (made["plain"].pids, made["plain"].cap_add) == (100, ("NET_RAW",))
    assert (made["own"].pids, made["own"].cap_add) == (512, ())
    service = next(spec for name, spec in made.items() if name.endswith("-db"))
    assert (service.pids, service.cap_add) == (64, ("SYS_NICE",))
