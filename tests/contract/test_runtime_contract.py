"""One contract, two runtimes: the fake and the real Docker Engine must agree."""

from __future__ import annotations

import re
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dockyard.backends.docker_images import DockerImages
from dockyard.backends.local.runtime import DockerRuntime
from dockyard.errors import RuntimeFailure
from dockyard.names import CAPABILITIES
from dockyard.runtime.base import (
    DEFAULT_CAPABILITIES,
    LABEL_PIPELINE,
    Bind,
    ContainerSpec,
    Health,
    Runtime,
)
from dockyard.testing import FakeRuntime
from dockyard.testing.images import BUSYBOX_IMAGE

MIB = 1024**2


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm]),
    ]
)
def runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    if request.param == "fake":
        fake = FakeRuntime()
        fake.add_image(BUSYBOX_IMAGE)
        yield fake
        return
    yield request.getfixturevalue(f"{request.param}_runtime")


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=[pytest.mark.docker, pytest.mark.swarm]),
    ]
)
def engine_runtime(request: pytest.FixtureRequest) -> Runtime:
    """The real runtimes only (the fake is told what happened by injected faults)."""
    runtime: Runtime = request.getfixturevalue(f"{request.param}_runtime")
    return runtime


@pytest.fixture
def label() -> dict[str, str]:
    return {LABEL_PIPELINE: f"contract-{uuid.uuid4().hex[:8]}"}


def spec(command: str, labels: dict[str, str], *binds: Bind) -> ContainerSpec:
    return ContainerSpec(
        image=BUSYBOX_IMAGE,
        command=("sh", "-c", command),
        cpus=0.5,
        memory=32 * MIB,
        labels=labels,
        binds=binds,
    )


def run(
    runtime: Runtime, container: ContainerSpec, timeout: float | None = None
) -> tuple[int | None, bytes, bool]:
    cid = runtime.create(container)
    try:
        runtime.start(cid)
        status = runtime.wait(cid, timeout)
        return status.exit_code, runtime.logs(cid), status.timed_out
    finally:
        runtime.remove(cid)


def test_exit_code_is_reported(runtime: Runtime, label: dict[str, str]) -> None:
    assert run(runtime, spec("exit 3", label))[0] == 3


def test_stdout_is_kept_as_logs(runtime: Runtime, label: dict[str, str]) -> None:
    code, logs, _ = run(runtime, spec("echo hello", label))
    assert (code, logs) == (0, b"hello\n")


def test_writable_bind_receives_output(
    runtime: Runtime, label: dict[str, str], tmp_path: Path
) -> None:
    run(runtime, spec("echo result > /out/r", label, Bind(str(tmp_path), "/out", readonly=False)))
    assert (tmp_path / "r").read_text() == "result\n"


def test_read_only_bind_can_be_read_not_written(
    runtime: Runtime, label: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("data\n")
    read = run(runtime, spec("cat /in/x/in.txt", label, Bind(str(tmp_path), "/in/x")))
    assert read[:2] == (0, b"data\n")
    write = run(runtime, spec("echo no > /in/x/new", label, Bind(str(tmp_path), "/in/x")))
    assert write[0] != 0
    assert not (tmp_path / "new").exists()


def test_timeout_stops_the_container(runtime: Runtime, label: dict[str, str]) -> None:
    code, _, timed_out = run(runtime, spec("sleep 60", label), timeout=1)
    assert timed_out
    assert code != 0


def test_containers_are_found_by_label_until_removed(
    runtime: Runtime, label: dict[str, str]
) -> None:
    cid = runtime.create(spec("true", label))
    assert [c.id for c in runtime.list(label)] == [cid]
    runtime.remove(cid)
    assert runtime.list(label) == []
    runtime.remove(cid)  # removing twice is fine


def test_missing_image_is_absent_and_cannot_be_created(
    runtime: Runtime, label: dict[str, str]
) -> None:
    assert runtime.image_id("dockyard-test/absent:never") is None
    missing = ContainerSpec(
        image="dockyard-test/absent:never", command=("true",), cpus=1, memory=32 * MIB, labels=label
    )
    with pytest.raises(RuntimeFailure):
        runtime.create(missing)


def test_present_image_has_an_id(runtime: Runtime) -> None:
    assert (runtime.image_id(BUSYBOX_IMAGE) or "").startswith("sha256:")


def test_an_imported_root_is_an_image_found_by_label_named_twice_and_kept_while_named(
    runtime: Runtime, tmp_path: Path
) -> None:
    (tmp_path / "motd").write_text("imported\n")
    tarball = tmp_path / "root.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(tmp_path / "motd", arcname="etc/motd")
    mark = {"dockyard.contract": uuid.uuid4().hex}
    name = f"dockyard-contract/{mark['dockyard.contract'][:8]}"
    first, second = f"{name}:1", f"{name}:2"
    labels = {**mark, "dockyard.packages": 'bwa=0.7.17-7 samtools=1.16.1-1 odd="q"'}
    image = runtime.import_image(tarball, first, labels, {"LANG": "C.UTF-8"}, ["cat"])
    try:
        assert runtime.image_id(first) == image
        assert runtime.image_labels(first) == labels  # a value with spaces stays one value
        assert runtime.find_image(mark) == image
        runtime.tag_image(image, second)
        assert runtime.image_id(second) == image
        assert runtime.remove_image(image) is False  # still named
    finally:
        if isinstance(runtime, DockerImages):
            for ref in (first, second):
                runtime.api.remove_image(ref, force=True)


def test_inspect_tells_created_from_ended_and_gone(runtime: Runtime, label: dict[str, str]) -> None:
    cid = runtime.create(spec("true", label))
    try:
        created = runtime.inspect(cid)
        assert created is not None and (created.id, created.started) == (cid, False)
        assert dict(created.labels).items() >= label.items()
        runtime.start(cid)
        runtime.wait(cid)
        ended = runtime.inspect(cid)
        assert ended is not None and ended.started and not ended.running
    finally:
        runtime.remove(cid)
    assert runtime.inspect(cid) is None


def test_a_container_has_its_pids_limit_no_new_privileges_and_only_the_capabilities_it_was_given(
    runtime: Runtime, label: dict[str, str]
) -> None:
    # cgroup v2 shows the limit in pids.max, v1 in pids/pids.max: one of them is missing
    shown = "cat /proc/self/status; cat /sys/fs/cgroup/pids.max; cat /sys/fs/cgroup/pids/pids.max"
    container = replace(spec(shown, label), pids=48, cap_add=("SYS_PTRACE",))
    _, logs, _ = run(runtime, container)
    text = logs.decode()
    effective = re.search(r"^CapEff:\s*([0-9a-f]+)$", text, re.MULTILINE)
    assert effective is not None, text
    mask = int(effective.group(1), 16)
    granted = {name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1}
    assert granted == {*DEFAULT_CAPABILITIES, "SYS_PTRACE"}
    assert "NET_RAW" not in granted and "MKNOD" not in granted
    assert "48" in text.split()
    # no-new-privileges: a set-uid binary in the image cannot raise a step's privileges
    assert re.search(r"^NoNewPrivs:\s*1$", text, re.MULTILINE), text


@pytest.mark.docker
def test_a_fork_loop_stops_at_the_pids_limit(
    docker_runtime: DockerRuntime, label: dict[str, str]
) -> None:
    """What the limit is for: a step that forks without end cannot take the host's PIDs."""
    loop = "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; echo all forked"
    code, logs, timed_out = run(docker_runtime, replace(spec(loop, label), pids=16), timeout=60)
    assert not timed_out
    assert b"can't fork" in logs, logs
    assert b"all forked" not in logs
    assert code != 0


def test_a_container_over_its_memory_limit_is_reported_out_of_memory(
    engine_runtime: Runtime, label: dict[str, str]
) -> None:
    grow = ContainerSpec(
        image=BUSYBOX_IMAGE,
        command=("awk", 'BEGIN { s = "x"; while (length(s) < 16777216) s = s s }'),
        cpus=0.5,
        memory=24 * MIB,
        labels=label,
    )
    cid = engine_runtime.create(grow)
    try:
        engine_runtime.start(cid)
        status = engine_runtime.wait(cid, timeout=60)
    finally:
        engine_runtime.remove(cid)
    assert (status.exit_code, status.oom_killed, status.timed_out) == (137, True, False)


def test_kill_stops_a_running_container_and_its_wait_sees_a_non_zero_exit(
    runtime: Runtime, label: dict[str, str]
) -> None:
    cid = runtime.create(spec("sleep 60", label))
    try:
        runtime.start(cid)
        running = runtime.inspect(cid)
        assert running is not None and running.running
        runtime.kill(cid)
        status = runtime.wait(cid, timeout=15)
        assert not status.timed_out  # it was the kill that ended it
        assert status.exit_code is not None and status.exit_code != 0
        ended = runtime.inspect(cid)
        assert ended is not None and ended.started and not ended.running
        runtime.kill(cid)  # killing what has ended is fine
    finally:
        runtime.remove(cid)
    runtime.kill(cid)  # and so is killing what is gone


def test_health_is_healthy_while_the_probe_succeeds_and_exited_after_the_container_ends(
    runtime: Runtime, label: dict[str, str]
) -> None:
    probe = Health(command=("true",), interval=0.2, timeout=2, retries=3)
    cid = runtime.create(replace(spec("sleep 60", label), health=probe))
    try:
        runtime.start(cid)
        deadline = time.monotonic() + 15  # the engine's first probe runs after one interval
        health = runtime.health(cid)
        while health == "starting" and time.monotonic() < deadline:
            time.sleep(0.1)
            health = runtime.health(cid)
        assert health == "healthy"
        runtime.kill(cid)
        runtime.wait(cid, timeout=15)
        assert runtime.health(cid) == "exited"
    finally:
        runtime.remove(cid)


def test_a_created_network_is_found_by_label_until_removed(
    runtime: Runtime, label: dict[str, str]
) -> None:
    name = f"dockyard-contract-{uuid.uuid4().hex[:12]}"
    runtime.create_network(name, label)
    try:
        assert runtime.networks(label) == [name]
        assert runtime.networks({LABEL_PIPELINE: f"{label[LABEL_PIPELINE]}-other"}) == []
    finally:
        runtime.remove_network(name)
    assert runtime.networks(label) == []
    runtime.remove_network(name)  # removing an absent network is fine


def test_nodes_include_a_ready_one_and_capacity_is_the_ready_nodes_together(
    runtime: Runtime,
) -> None:
    nodes = runtime.nodes()
    ready = [node for node in nodes if node.ready]
    assert ready
    assert len({node.id for node in nodes}) == len(nodes)
    assert all(node.capacity.cpus > 0 and node.capacity.memory > 0 for node in ready)
    total = runtime.capacity()
    assert total.cpus == pytest.approx(sum(node.capacity.cpus for node in ready))
    assert total.memory == sum(node.capacity.memory for node in ready)
