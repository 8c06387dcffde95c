from __future__ import annotations

from pathlib import Path

from dockyard.planning.graph import InstanceId, UpstreamMount
from dockyard.planning.preflight import graph_of
from dockyard.report.render import mermaid
from dockyard.spec import load_pipeline
from tests.conftest import WritePipeline

DIAMOND = """
    version: 1
    name: diamond
    defaults: {image: busybox:1.36}
    steps:
      a: {command: "echo a > /out/a"}
      b:
        needs: [a]
        scatter: {s: [x, y, z]}
        command: "echo ${s} > /out/v"
      c:
        needs: [b]
        scatter: {s: [x, y, z]}
        command: ["cat", "/in/b/v"]
      d:
        needs: [b, c]
        command: "cat /in/b/*/v"
"""


def test_scatter_expands_to_one_instance_per_value(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    assert [str(i) for i in graph.order] == [
        "a",
        "b[x]",
        "b[y]",
        "b[z]",
        "c[x]",
        "c[y]",
        "c[z]",
        "d",
    ]


def test_string_command_runs_through_sh_with_values_interpolated(
    write_pipeline: WritePipeline,
) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    assert graph.instances[InstanceId("b", "y")].command == ("sh", "-c", "echo y > /out/v")
    assert graph.instances[InstanceId("c", "y")].command == ("cat", "/in/b/v")


def test_same_variable_pairs_one_instance_at_in_step(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    assert graph.instances[InstanceId("c", "z")].upstream == (
        UpstreamMount(InstanceId("b", "z"), "/in/b"),
    )


def test_unscattered_step_gathers_every_instance_by_value(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    targets = [m.target for m in graph.instances[InstanceId("d")].upstream]
    assert targets == ["/in/b/x", "/in/b/y", "/in/b/z", "/in/c/x", "/in/c/y", "/in/c/z"]


def test_scattered_step_under_unscattered_one_mounts_it_whole(
    write_pipeline: WritePipeline,
) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    assert graph.instances[InstanceId("b", "x")].upstream == (
        UpstreamMount(InstanceId("a"), "/in/a"),
    )


def test_two_variables_expand_to_their_product(write_pipeline: WritePipeline) -> None:
    path = write_pipeline("""
        version: 1
        name: product
        steps:
          a:
            image: busybox:1.36
            scatter: {s: [x, y], n: ["1", "2"]}
            command: "echo ${s}-${n}"
          b:
            image: busybox:1.36
            needs: [a]
            scatter: {s: [x, y]}
            command: "ls /in/a"
    """)
    graph = graph_of(load_pipeline(path))
    expected = ["a[x,1]", "a[x,2]", "a[y,1]", "a[y,2]"]
    assert [str(i) for i in graph.order if i.step == "a"] == expected
    assert [m.target for m in graph.instances[InstanceId("b", "y")].upstream] == [
        "/in/a/1",
        "/in/a/2",
    ]


def test_glob_values_are_sorted_file_names(write_pipeline: WritePipeline, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("b.fq", "a.fq", "c.txt"):
        (tmp_path / "data" / name).write_text(name)
    path = write_pipeline("""
        version: 1
        name: glob
        steps:
          count:
            image: busybox:1.36
            scatter: {f: {glob: "data/*.fq"}}
            inputs: {data: ./data}
            command: "wc -c /in/data/${f}"
    """)
    graph = graph_of(load_pipeline(path))
    assert [str(i) for i in graph.order] == ["count[a.fq]", "count[b.fq]"]


def test_critical_path_ranks_long_chains_first(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(DIAMOND)))
    priority = graph.priority
    assert priority[InstanceId("a")] == 4
    assert priority[InstanceId("b", "x")] == 3
    assert priority[InstanceId("d")] == 1


def test_defaults_apply_where_a_step_says_nothing(write_pipeline: WritePipeline) -> None:
    path = write_pipeline("""
        version: 1
        name: defaults
        defaults:
          image: busybox:1.36
          resources: {cpus: 0.5, memory: 64m}
          env: {LANG: C, A: "1"}
        steps:
          a: {command: "true", env: {A: "2"}}
          b: {command: "true", image: other:1, resources: {cpus: 2}}
    """)
    graph = graph_of(load_pipeline(path))
    a, b = graph.instances[InstanceId("a")], graph.instances[InstanceId("b")]
    assert (a.image.name, a.cpus, a.memory, dict(a.env)) == (
        "busybox:1.36",
        0.5,
        64 * 1024**2,
        {"A": "2", "LANG": "C"},
    )
    assert (b.image.name, b.cpus, b.memory) == ("other:1", 2.0, 256 * 1024**2)


CHAIN = """
    version: 1
    name: chain
    defaults: {image: busybox:1.36}
    steps:
      a: {scatter: {s: [x, y]}, command: "echo ${s}"}
      b: {stdin: a, scatter: {s: [x, y]}, command: "cat"}
      c: {stdin: b, scatter: {s: [x, y]}, command: "wc -c > /out/n"}
      d: {needs: [c], command: "cat /in/c/*/n"}
"""


def test_streamed_steps_form_one_chain_per_value(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(CHAIN)))
    assert [str(i) for i in graph.group(InstanceId("b", "y"))] == ["a[y]", "b[y]", "c[y]"]
    assert graph.group(InstanceId("d")) == (InstanceId("d"),)


def test_a_stream_producer_is_not_mounted_as_an_output(write_pipeline: WritePipeline) -> None:
    graph = graph_of(load_pipeline(write_pipeline(CHAIN)))
    consumer = graph.instances[InstanceId("b", "x")]
    assert consumer.stdin == InstanceId("a", "x")
    assert consumer.upstream == ()


def test_steps_whose_names_differ_only_by_dash_and_underscore_are_two_nodes(
    write_pipeline: WritePipeline,
) -> None:
    text = mermaid(
        load_pipeline(
            write_pipeline(
                """
                version: 1
                name: twins
                steps:
                  a-b: {command: "true"}
                  a_b: {command: "true", needs: [a-b]}
                """
            )
        )
    )
    assert "s_a_db --> s_a__b" in text
