"""The pipeline's step graph as Mermaid or DOT text."""

from __future__ import annotations

from dockyard.spec.loader import PipelineFile


def _label(pf: PipelineFile, name: str) -> str:
    step = pf.pipeline.steps[name]
    if step.scatter:
        return f"{name} [{', '.join(step.scatter)}]"
    return name


def mermaid(pf: PipelineFile) -> str:
    lines = ["flowchart TD"]
    for name in pf.pipeline.steps:
        lines.append(f'    {_id(name)}["{_label(pf, name)}"]')
    for name, step in pf.pipeline.steps.items():
        for up in step.upstream:
            arrow = "==>|stdin|" if step.stdin == up else "-->"
            lines.append(f"    {_id(up)} {arrow} {_id(name)}")
    return "\n".join(lines)


def dot(pf: PipelineFile) -> str:
    lines = [f'digraph "{pf.pipeline.name}" {{', "    rankdir=TB;"]
    for name in pf.pipeline.steps:
        lines.append(f'    "{name}" [label="{_label(pf, name)}"];')
    for name, step in pf.pipeline.steps.items():
        for up in step.upstream:
            style = ' [style=bold, label="stdin"]' if step.stdin == up else ""
            lines.append(f'    "{up}" -> "{name}"{style};')
    lines.append("}")
    return "\n".join(lines)


def _id(name: str) -> str:
    """A Mermaid node id for a step name: letters, digits and ``_`` only, and distinct for
    distinct names (``a-b`` and ``a_b`` are two steps)."""
    return "s_" + name.replace("_", "__").replace("-", "_d")
