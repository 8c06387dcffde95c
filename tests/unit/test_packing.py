"""Packing by what steps use: a streamed chain, and a step that ran before with the same
image and command, reserve the CPU they used; the declared cpus stay the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.cli import main
from dockyard.planning.actions import Resolution, Start
from dockyard.planning.graph import InstanceId
from dockyard.planning.packing import MIN_RESERVED, Packing
from dockyard.planning.planner import Planner
from dockyard.planning.preflight import graph_of
from dockyard.planning.schedule import Capacity
from dockyard.spec import load_pipeline
from dockyard.state.rows import RunRow
from dockyard.state.store import Store
from tests.conftest import WritePipeline

MIB = 1024**2
MISS = Resolution(reusable=False, orphans={})
CHAINS = """
    version: 1
    name: chains
    defaults: {resources: {memory: 64m}}
    steps:
      align:
        scatter: {sample: [s1, s2, s3, s4]}
        command: "bwa mem ${sample}"
        resources: {cpus: 1, memory: 64m}
      sort:
        stdin: align
        scatter: {sample: [s1, s2, s3, s4]}
        command: "samtools sort -o /out/${sample}.bam -"
        resources: {cpus: 0.5, memory: 64m}
"""


def started(planner: Planner) -> list[Start]:
    while units := planner.resolvable():
        for unit in units:
            planner.resolved(unit, MISS)
    return [a for a in planner.next(0.0).actions if isinstance(a, Start)]


def test_a_chain_without_history_reserves_its_largest_member(
    write_pipeline: WritePipeline,
) -> None:
    graph = graph_of(load_pipeline(write_pipeline(CHAINS)))
    two_cpus = Capacity.of(2, 4096 * MIB)
    # declared: each chain takes 1.5 of 2 CPUs, so one runs at a time
    assert len(started(Planner(graph, two_cpus))) == 2
    # packed: a chain reserves 1 CPU (its aligner's), shared out 2:1, so two run at a time
    starts = started(Planner(graph, two_cpus, packing=Packing(lambda key, cpus: None)))
    assert len(starts) == 4
    reserved = {str(s.instance): s.reserved for s in starts}
    assert reserved["align[s1]"] is not None and abs(reserved["align[s1]"] - 2 / 3) < 1e-9
    assert reserved["sort[s1]"] is not None and abs(reserved["sort[s1]"] - 1 / 3) < 1e-9
    # the limit each container gets is still what it declares
    assert graph.instances[InstanceId("sort", "s1")].cpus == 0.5
    assert {s.basis for s in starts} == {"chain"}


def test_a_chain_never_reserves_more_than_it_declares(write_pipeline: WritePipeline) -> None:
    tiny = CHAINS.replace("cpus: 1,", "cpus: 0.01,").replace("cpus: 0.5,", "cpus: 0.01,")
    graph = graph_of(load_pipeline(write_pipeline(tiny)))
    reserved = Packing(lambda key, cpus: None).reserve(graph, graph.group(InstanceId("sort", "s1")))
    assert {r.cpus for r in reserved.values()} == {0.01}


def test_history_sets_what_each_step_reserves(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(CHAINS)))
    align, sort = (graph.instances[InstanceId(s, "s1")].usage_key for s in ("align", "sort"))
    asked: list[tuple[str, float]] = []

    def history(key: str, cpus: float) -> float | None:
        asked.append((key, cpus))
        return {align: 0.6, sort: 0.001}.get(key)

    starts = started(Planner(graph, Capacity.of(2, 4096 * MIB), packing=Packing(history)))
    reserved = {str(s.instance): s.reserved for s in starts}
    # 0.6 + 0.05 per chain: three chains fit in 2 CPUs
    assert reserved == {
        "align[s1]": 0.6,
        "sort[s1]": MIN_RESERVED,
        "align[s2]": 0.6,
        "sort[s2]": MIN_RESERVED,
        "align[s3]": 0.6,
        "sort[s3]": MIN_RESERVED,
    }
    # asked once per step and limit, not per instance
    assert sorted(asked) == sorted({(align, 1.0), (sort, 0.5)})
    assert {s.basis for s in starts} == {"history"}


def test_never_more_than_declared(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(CHAINS)))
    packing = Packing(lambda key, cpus: 7.5)
    reserved = packing.reserve(graph, graph.group(InstanceId("align", "s1")))
    assert {m: r.cpus for m, r in reserved.items()} == {
        InstanceId("align", "s1"): 1.0,
        InstanceId("sort", "s1"): 0.5,
    }


def test_the_usage_key_is_the_step_not_the_sample(write_pipeline: WritePipeline) -> None:
    path = write_pipeline(CHAINS)
    graph = graph_of(load_pipeline(path))
    keys = {i.usage_key for i in graph.instances.values() if i.step == "align"}
    assert len(keys) == 1 and keys != {""}
    path.write_text(path.read_text().replace("bwa mem", "bwa mem -k 19"))
    changed = graph_of(load_pipeline(path))
    assert changed.instances[InstanceId("align", "s1")].usage_key not in keys
    # the parameters its command pastes in are part of it: -t 8 is not -t 1
    path.write_text(
        "version: 1\nname: p\nparams: {threads: 1}\n"
        "steps: {a: {command: 'bwa mem -t ${params.threads}'}, b: {command: 'true'}}\n"
    )
    one, eight = (graph_of(load_pipeline(path, params=[f"threads={n}"])) for n in (1, 8))
    assert one.instances[InstanceId("a")].usage_key != eight.instances[InstanceId("a")].usage_key
    assert one.instances[InstanceId("b")].usage_key == eight.instances[InstanceId("b")].usage_key


def test_the_store_answers_the_most_of_the_last_attempts(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.create_run(RunRow("r", "p", "sha", "running", 0.0, None, 2.0, 1024, None), [])
    at = "local"
    rows = [("a", n, 1.0, 64, 100.0 * n, "a.log", at, "key", None, None) for n in range(1, 8)]
    rows += [
        ("short", 1, 1.0, 64, 0.0, "s.log", at, "other", None, None),
        ("packed", 1, 1.0, 64, 0.0, "p.log", at, "key", 0.7, "history"),
        ("wider", 1, 4.0, 64, 0.0, "w.log", at, "key", None, None),
    ]
    store.insert_attempts("r", rows)
    # attempt n ran 10 s and used n CPU-seconds; the short one ran 0.1 s
    ended = [("succeeded", 100.0 * n + 10, float(n), "a", n) for n in range(1, 8)]
    ended += [
        ("succeeded", 0.1, 0.1, "short", 1),
        ("succeeded", 1000.0, 900.0, "packed", 1),  # (packed by history: left out)
        ("succeeded", 1000.0, 3000.0, "wider", 1),
    ]
    store.update_attempts("r", ("state", "ended_at", "cpu_seconds"), ended)
    assert store.cpus_used("key", 1.0) == 0.7  # the most of the last five (3..7)
    assert store.cpus_used("key", 4.0) == 3.0  # (what it used with another limit)
    assert store.cpus_used("other", 1.0) is None  # too short to say
    assert store.cpus_used("unknown", 1.0) is None
    store.close()


def test_right_sizing_shows_declared_reserved_and_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dockyard.yaml"
    path.write_text("version: 1\nname: p\nsteps: {a: {command: 'true'}, b: {command: 'true'}}\n")
    store = Store(tmp_path / ".dockyard" / "state.db")
    store.create_run(
        RunRow("r", "p", "sha", "succeeded", 0.0, 30.0, 2.0, 1024, None), [("a", "a"), ("b", "b")]
    )
    store.insert_attempts(
        "r",
        [
            ("a", 1, 2.0, 512 * MIB, 0.0, "a.log", "local", "ka", 0.5, "history"),
            ("b", 1, 1.0, 64 * MIB, 0.0, "b.log", "local", "kb", None, None),
        ],
    )
    store.update_attempts(
        "r",
        ("state", "ended_at", "cpu_seconds", "peak_memory"),
        [("succeeded", 10.0, 4.0, 20 * MIB, "a", 1), ("succeeded", 10.0, 9.0, 63 * MIB, "b", 1)],
    )
    store.close()
    capsys.readouterr()
    assert main(["status", "-f", str(path), "--json"]) == 0
    steps = {s["step"]: s for s in json.loads(capsys.readouterr().out)["steps"]}
    assert steps["a"]["cpus"] == 2.0 and steps["a"]["cpus_reserved"] == 0.5
    assert steps["a"]["cpus_used"] == 0.4
    assert steps["a"]["notes"] == [
        "memory over-asked: 25m would do",
        "CPU over-asked: it used 0.40 of 2",
    ]
    assert steps["b"]["cpus_reserved"] == 1.0  # (as declared)
    assert steps["b"]["notes"] == ["memory near its limit: ask for 79m"]
    assert main(["status", "-f", str(path), "--resources"]) == 0
    shown = capsys.readouterr().out
    assert "reserved" in shown and "0.50" in shown and "0.40" in shown
