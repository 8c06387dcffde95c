"""How a container is written as a Swarm service and how its task reads back (pure)."""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import replace

import pytest

from dockyard.backends.swarm.runtime import SwarmRuntime
from dockyard.backends.swarm.tasks import (
    LABEL_CONTAINER,
    SERVICE_NAME_MAX,
    service_definition,
    service_name,
    task_exit,
    task_node,
    task_state,
)
from dockyard.errors import EngineUnavailable
from dockyard.runtime.base import DEFAULT_CAPABILITIES, NO_NETWORK, Bind, ContainerSpec, Health


def spec(**changes: object) -> ContainerSpec:
    base = ContainerSpec(
        image="sha256:" + "a" * 64,
        command=("sh", "-c", "echo hi"),
        cpus=1.5,
        memory=64 * 1024**2,
        labels={"dockyard.instance": "align[s1]"},
        env={"A": "1"},
        binds=(Bind("/data/x", "/in/x"), Bind("/stage", "/out", readonly=False)),
        name="dockyard-p-r-align-s1-1",
        pids=100,
        cap_add=("SYS_PTRACE",),
        node="node-id-2",
    )
    return ContainerSpec(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_a_service_is_pinned_to_its_node_with_equal_reservations_and_limits() -> None:
    body = service_definition(spec())
    template = body["TaskTemplate"]
    assert template["Placement"]["Constraints"] == ["node.id==node-id-2"]
    resources = template["Resources"]
    assert resources["Limits"] == {
        "MemoryBytes": 64 * 1024**2,
        "NanoCPUs": 1_500_000_000,
        "Pids": 100,
    }
    assert resources["Reservations"] == {"MemoryBytes": 64 * 1024**2, "NanoCPUs": 1_500_000_000}
    assert template["RestartPolicy"]["Condition"] == "none"  # dockyard owns retries
    assert body["Mode"] == {"Replicated": {"Replicas": 0}}  # created, not started
    assert body["EndpointSpec"] == {"Mode": "dnsrr"}


def test_a_service_has_the_security_settings_of_a_container() -> None:
    container = service_definition(spec())["TaskTemplate"]["ContainerSpec"]
    assert container["CapabilityDrop"] == ["ALL"]
    assert container["CapabilityAdd"] == sorted({*DEFAULT_CAPABILITIES, "SYS_PTRACE"})
    assert container["Init"] is True
    assert container["Mounts"] == [
        {"Type": "bind", "Source": "/data/x", "Target": "/in/x", "ReadOnly": True},
        {"Type": "bind", "Source": "/stage", "Target": "/out", "ReadOnly": False},
    ]
    assert container["Env"] == ["A=1"]
    assert "Command" not in container  # the image's entrypoint stays
    assert container["Args"] == ["sh", "-c", "echo hi"]


def test_an_entrypoint_becomes_the_command_and_the_command_its_arguments() -> None:
    container = service_definition(spec(entrypoint=("/helper",)))["TaskTemplate"]["ContainerSpec"]
    assert (container["Command"], container["Args"]) == (["/helper"], ["sh", "-c", "echo hi"])


def test_a_health_check_and_a_network_with_aliases_are_kept() -> None:
    body = service_definition(
        spec(health=Health(("true",), 0.2, 2.0, 3), network="net", aliases=("db",))
    )
    check = body["TaskTemplate"]["ContainerSpec"]["Healthcheck"]
    assert check == {
        "Test": ["CMD", "true"],
        "Interval": 200_000_000,
        "Timeout": 2 * 10**9,
        "Retries": 3,
    }
    assert body["TaskTemplate"]["Networks"] == [{"Target": "net", "Aliases": ["db"]}]


def test_a_step_without_network_is_a_task_on_no_network() -> None:
    """On a Swarm a task attached to no network has its loopback interface alone: that is
    `network: false`, with no overlay to join (the runtime gives `network: true` steps the
    run's overlay before this)."""
    assert "Networks" not in service_definition(spec(network=NO_NETWORK))["TaskTemplate"]


def test_the_container_name_is_a_label_and_a_long_one_a_shortened_service_name() -> None:
    body = service_definition(spec())
    assert body["Name"] == "dockyard-p-r-align-s1-1"
    assert body["Labels"][LABEL_CONTAINER] == "dockyard-p-r-align-s1-1"
    long = "dockyard-" + "x" * 80 + "-1"
    short = service_name(long)
    assert len(short) <= SERVICE_NAME_MAX and short.startswith("dockyard-x")
    assert short != service_name(long + "2")  # a digest of the whole tells them apart
    assert service_name("a b/c") != "a b/c" and " " not in service_name("a b/c")
    # (Swarm refuses a dot, or an underscore next to a hyphen, in a service name)
    for name in ("dockyard-x-run-echo.cwl-1", "step_-1", "a__b"):
        assert re.fullmatch(r"[A-Za-z0-9]+(?:[-_]+[A-Za-z0-9]+)*", service_name(name)), name
    assert service_name("dockyard-x-run-echo.cwl-1") != service_name("dockyard-x-run-echo-cwl-1")
    # (a pattern with nested repeats would backtrack for hours here: the suite's timeout)
    assert service_name("a" * 40 + ".").startswith("a" * 40)


def task(state: str, code: int | None = None, **extra: object) -> dict[str, object]:
    status: dict[str, object] = {"State": state, "Err": extra.pop("err", None)}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code, "ContainerID": "c0ffee"}
    return {"Status": status, **extra}


def test_how_an_ended_task_ended() -> None:
    assert task_exit(task("complete", 0)).exit_code == 0
    failed = task_exit(task("failed", 3, err="task: non-zero exit (3)"))
    assert (failed.exit_code, failed.error) == (3, "task: non-zero exit (3)")
    assert task_exit(task("shutdown", 143)).exit_code == 143
    refused = task_exit(task("rejected", err="No such image"))
    assert refused.exit_code is None and "No such image" in (refused.error or "")
    assert task_exit(task("orphaned")).exit_code is None  # lost, not the step's failure
    before_it_ran = {"Status": {"State": "shutdown", "ContainerStatus": {"ExitCode": 0}}}
    assert task_exit(before_it_ran).exit_code == 137  # not a success: it never ran


def test_task_states_read_as_container_states() -> None:
    assert task_state(None) == "created"
    assert task_state(task("pending")) == "running"  # started, from dockyard's side
    assert task_state(task("running")) == "running"
    assert task_state(task("failed", 1)) == "exited"


def test_a_task_not_yet_assigned_is_on_the_node_it_is_pinned_to() -> None:
    assert task_node(task("running", NodeID="n1")) == "n1"
    pinned = task("pending", Spec={"Placement": {"Constraints": ["node.id == n2"]}})
    assert task_node(pinned) == "n2"
    assert task_node(task("pending")) is None


class _Manager:
    """The manager's API as far as the nodes go: it may be away."""

    def __init__(self) -> None:
        self.away = False
        self.found = [_node("n1", "one", "manager")]

    def nodes(self) -> list[dict[str, object]]:
        if self.away:
            raise EngineUnavailable("the manager is restarting")
        return list(self.found)


def _node(node_id: str, name: str, role: str = "worker") -> dict[str, object]:
    return {
        "ID": node_id,
        "Description": {"Hostname": name, "Resources": {"NanoCPUs": 2e9, "MemoryBytes": 2**30}},
        "Status": {"State": "ready", "Addr": "10.0.0.1"},
        "Spec": {"Availability": "active", "Role": role},
    }


def test_the_runtime_s_view_of_the_nodes_is_fresh_and_holds_while_the_manager_is_away() -> None:
    """The agents' addresses and the volumes' managers are read from one view of the nodes:
    asked again after a second, the last answer holding while the manager does not
    answer (the agents do not need it), a clear error while none was had."""
    now = [0.0]
    runtime = SwarmRuntime.__new__(SwarmRuntime)  # (no engine: the API is the manager above)
    manager = runtime.api = _Manager()  # type: ignore[assignment]
    runtime.clock, runtime._lock, runtime._nodes = (lambda: now[0]), threading.Lock(), None
    runtime._failed_at = None
    manager.away = True
    with pytest.raises(EngineUnavailable):
        runtime.known_nodes()
    manager.away = False
    assert [(n.id, n.manager) for n in runtime.known_nodes()] == [("n1", True)]
    manager.found.append(_node("n2", "two"))
    assert len(runtime.known_nodes()) == 1  # (seen within the second: as it was)
    now[0] = 2.0
    assert [n.id for n in runtime.known_nodes()] == ["n1", "n2"]
    manager.away, now[0] = True, 4.0
    assert [n.id for n in runtime.known_nodes()] == ["n1", "n2"]  # the last answer holds
    with pytest.raises(EngineUnavailable):  # (what tells a lost node asks again, always)
        runtime._node_states()


class _NodeEngine:
    def __init__(self, networks: list[dict[str, str]]):
        self.api = self
        self.found = networks

    def networks(self, names: list[str]) -> list[dict[str, str]]:
        return [n for n in self.found if n["Name"] in names]

    def _translated(self, what: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class _Engines:
    def __init__(self, engines: dict[str, _NodeEngine]):
        self.engines = engines

    def engine_of(self, node: str) -> _NodeEngine | None:
        return self.engines.get(node)


def test_a_step_without_network_joins_no_network_only_where_that_means_loopback() -> None:
    """A task attached to no network gets its engine's default network: nothing on a node
    whose engine has no default bridge, the bridge (with egress) elsewhere, where a step
    without network joins its run's internal overlay instead; an engine not known is taken
    to have a bridge. A step with network joins the run's overlay, with egress."""
    runtime = SwarmRuntime.__new__(SwarmRuntime)
    runtime._lock = threading.Lock()
    runtime.node_engines = _Engines(  # type: ignore[assignment]
        {
            "bare": _NodeEngine([{"Name": "host", "Driver": "host"}]),
            "bridged": _NodeEngine([{"Name": "bridge", "Driver": "bridge"}]),
        }
    )
    made: list[tuple[str, bool]] = []
    runtime._made_network = lambda prefix, labels, *, internal: (  # type: ignore[method-assign]
        made.append((prefix, internal)) or f"{prefix}-r1"
    )
    isolated = spec(network=NO_NETWORK)
    assert runtime._network_for(replace(isolated, node="bare")) == NO_NETWORK
    assert runtime._network_for(replace(isolated, node="bridged")) == "dockyard-isolated-r1"
    assert runtime._network_for(replace(isolated, node="unknown")) == "dockyard-isolated-r1"
    assert runtime._network_for(replace(isolated, node="bare", network=None)) == "dockyard-net-r1"
    assert made == [("dockyard-isolated", True)] * 2 + [("dockyard-net", False)]


def test_a_task_packed_by_use_reserves_what_the_planner_placed_it_by() -> None:
    from dockyard.backends.swarm.tasks import service_definition
    from dockyard.runtime.base import ContainerSpec

    spec = ContainerSpec(image="i", command=None, cpus=1.0, memory=64, labels={})
    packed = ContainerSpec(
        image="i", command=None, cpus=1.0, memory=64, labels={}, reserved_cpus=0.25
    )
    resources = service_definition(spec)["TaskTemplate"]["Resources"]
    assert resources["Reservations"]["NanoCPUs"] == 1_000_000_000
    resources = service_definition(packed)["TaskTemplate"]["Resources"]
    assert resources["Reservations"]["NanoCPUs"] == 250_000_000
    assert resources["Limits"]["NanoCPUs"] == 1_000_000_000  # the limit stays declared
