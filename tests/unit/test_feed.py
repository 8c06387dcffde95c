"""Work handed to a run while it goes on: the graph and the planner grow, success codes,
and the pieces a CWL tool invocation needs (staging names, seeds, redirections, links)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.disk.node_disk import seed_folder
from dockyard.errors import PlanError
from dockyard.execution.stream import redirect
from dockyard.planning.actions import Commit, Fail, Outcome, Reason, Resolution, Start, committable
from dockyard.planning.graph import Graph, Instance, InstanceId, UpstreamMount
from dockyard.planning.planner import Planner
from dockyard.planning.schedule import Capacity
from dockyard.spec.model import ImageSpec, Retries

MIB = 1024**2
MISS = Resolution(reusable=False, orphans={})


def handed(name: str, key: str = "", **changes: object) -> Instance:
    fields: dict[str, object] = {
        "id": InstanceId(name, key),
        "bindings": (),
        "image": ImageSpec.model_validate("busybox:1.36"),
        "command": ("true",),
        "env": (),
        "inputs": (),
        "upstream": (),
        "cpus": 1.0,
        "memory": 64 * MIB,
        "retries": Retries(),
        "timeout": None,
    }
    fields.update(changes)
    return Instance(**fields)  # type: ignore[arg-type]


def empty_planner(cpus: float = 2) -> Planner:
    return Planner(Graph("fed", {}, [], {}), Capacity.of(cpus, 1024 * MIB), keep_going=True)


def test_an_empty_run_is_finished_and_what_is_added_is_resolved_then_started() -> None:
    planner = empty_planner()
    assert planner.next(now=0).finished
    planner.add(handed("a"))
    planner.add(handed("b"))
    units = planner.resolvable()
    assert units == [(InstanceId("a"),), (InstanceId("b"),)]
    for unit in units:
        assert planner.resolved(unit, MISS) == []
    plan = planner.next(now=0)
    assert plan.actions == (
        Start(InstanceId("a"), 1, 64 * MIB, "local"),
        Start(InstanceId("b"), 1, 64 * MIB, "local"),
    )
    assert not plan.finished
    done = Outcome(0, Reason.EXITED)
    assert planner.ended(InstanceId("a"), 1, done, now=1) == [Commit(InstanceId("a"), 1)]
    assert planner.ended(InstanceId("b"), 1, done, now=1) == [Commit(InstanceId("b"), 1)]
    assert planner.next(now=1).finished


def test_work_added_later_waits_for_room_as_any_other() -> None:
    planner = empty_planner(cpus=1)
    for name in ("a", "b"):
        planner.add(handed(name))
    for unit in planner.resolvable():
        planner.resolved(unit, MISS)
    first = planner.next(now=0)
    assert [a.instance for a in first.actions] == [InstanceId("a")]  # one CPU: one at a time
    planner.ended(InstanceId("a"), 1, Outcome(0, Reason.EXITED), now=1)
    assert [a.instance for a in planner.next(now=1).actions] == [InstanceId("b")]


def test_a_failure_of_added_work_stops_nothing_else_the_feeder_decides() -> None:
    planner = empty_planner()
    planner.add(handed("bad"))
    for unit in planner.resolvable():
        planner.resolved(unit, MISS)
    planner.next(now=0)
    actions = planner.ended(InstanceId("bad"), 1, Outcome(2, Reason.EXITED), now=1)
    assert isinstance(actions[0], Fail)
    planner.add(handed("next"))
    for unit in planner.resolvable():
        planner.resolved(unit, MISS)
    assert [a.instance for a in planner.next(now=2).actions] == [InstanceId("next")]


def test_success_codes_decide_what_is_committed() -> None:
    planner = empty_planner()
    planner.add(handed("grep", success_codes=(0, 1)))
    for unit in planner.resolvable():
        planner.resolved(unit, MISS)
    planner.next(now=0)
    actions = planner.ended(InstanceId("grep"), 1, Outcome(1, Reason.EXITED), now=1)
    assert actions == [Commit(InstanceId("grep"), 1)]
    assert committable(Outcome(3, Reason.EXITED), success=(3,))
    assert not committable(Outcome(0, Reason.EXITED), success=(3,))
    assert not committable(Outcome(1, Reason.OOM), success=(1,))  # killed is not an exit


def test_what_reads_other_instances_or_is_there_already_cannot_be_added() -> None:
    graph = Graph("fed", {}, [], {})
    graph.add(handed("a"))
    with pytest.raises(PlanError):
        graph.add(handed("a"))
    with pytest.raises(PlanError):
        graph.add(handed("b", upstream=(UpstreamMount(InstanceId("a"), "/in/a"),)))
    assert list(graph.order) == [InstanceId("a")]
    assert graph.priority[InstanceId("a")] == 1


def test_seeds_are_copied_links_as_links_and_never_outside(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f.txt").write_text("data")
    (source / "link").symlink_to("/etc/passwd")
    lone = tmp_path / "lone.txt"
    lone.write_text("one")
    out = tmp_path / "out"
    out.mkdir()
    seed_folder(out, [(source, "d"), (lone, "deep/er/lone.txt")])
    assert (out / "d" / "sub" / "f.txt").read_text() == "data"
    assert os.readlink(out / "d" / "link") == "/etc/passwd"  # copied, not followed
    assert (out / "deep" / "er" / "lone.txt").read_text() == "one"
    assert (out / "deep" / "er" / "lone.txt").stat().st_mode & 0o666 == 0o666
    for bad in ("../x", "/abs", "a/../../x", ""):
        with pytest.raises(ValueError):
            seed_folder(out, [(lone, bad)])


def test_redirect_quotes_the_file_names() -> None:
    argv = redirect(("cat",), "/var/lib/cwl/a b.txt", "out;rm", None)
    assert argv == (
        "sh",
        "-c",
        "exec \"$@\" <'/var/lib/cwl/a b.txt' >'out;rm'",
        "dockyard-stdio",
        "cat",
    )
