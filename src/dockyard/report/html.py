"""The run report: one self-contained HTML page (inline CSS and SVG, no scripts, no
network) that shows what ran, where the time went, what each step used, and what failed.

It renders the same :class:`~dockyard.report.summary.RunSummary` as ``status`` and ``trace``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

from dockyard.lifecycles import AttemptState, Phase
from dockyard.planning.actions import Reason
from dockyard.report.sizing import step_sizing
from dockyard.report.summary import InstanceSummary, RunSummary
from dockyard.spec.model import Pipeline
from dockyard.state.rows import AttemptRow
from dockyard.units import format_memory, format_seconds

CACHED = "cached"  # (shown apart from the instances that ran and succeeded)
COLORS: dict[str, str] = {
    Phase.SUCCEEDED: "#2e9d5b",
    CACHED: "#3aa7b9",
    Phase.FAILED: "#d1453b",
    Phase.BLOCKED: "#e0a526",
    Reason.OOM: "#8e44ad",
    Reason.TIMEOUT: "#e67e22",
    Phase.INTERRUPTED: "#8a8f98",
    Phase.PENDING: "#c4c9d0",
    Phase.RUNNING: "#4a7bd0",
    Reason.LOST: "#8a8f98",
    Reason.ENGINE: "#8a8f98",
}
NODE_W, NODE_H, GAP_X, GAP_Y = 180, 58, 28, 46
LANE_H, CHART_W, LEFT = 18, 960, 70

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fbfbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5b6270} table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left;font-size:13px}
th{background:#f0f2f5} .num{text-align:right;font-variant-numeric:tabular-nums}
.flag{color:#b33} .ok{color:#2e7d4f} pre{background:#1d2330;color:#e8eaee;padding:8px;
overflow:auto;font-size:12px;max-height:260px} .chips span{display:inline-block;
margin:0 8px 4px 0;padding:2px 8px;border-radius:10px;color:#fff;font-size:12px}
svg text{font:12px system-ui,sans-serif} .node rect.box{fill:#fff;stroke:#8a93a3}
.edge{stroke:#8a93a3;stroke-width:1.4;fill:none} .edge.stream{stroke:#4a7bd0;stroke-width:3}
"""


@dataclass(frozen=True)
class _Bar:
    attempt: AttemptRow
    lane: int
    outcome: str


def render(
    summary: RunSummary, pipeline: Pipeline | None, log_tail: Callable[[AttemptRow], str]
) -> str:
    run = summary.run
    ended = run.ended_at or max(
        (a.ended_at or a.started_at for i in summary.instances for a in i.attempts),
        default=run.started_at,
    )
    counts = summary.counts()
    cached = sum(1 for i in summary.instances if i.row.cached)
    attempts = [a for i in summary.instances for a in i.attempts]
    retried = [i for i in summary.instances if len(i.attempts) > 1]
    ooms = [a for a in attempts if a.reason == Reason.OOM]
    chips = [
        (Phase.SUCCEEDED.value, counts.get(Phase.SUCCEEDED, 0) - cached),
        (CACHED, cached),
        *((p.value, counts.get(p, 0)) for p in (Phase.FAILED, Phase.BLOCKED, Phase.INTERRUPTED)),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dockyard run {escape(run.id)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(run.pipeline)} — run {escape(run.id)}</h1>",
        f"<div class='meta'>state <b>{escape(run.state)}</b> · "
        f"{format_seconds(ended - run.started_at)} · pool {run.pool_cpus:g} CPUs, "
        f"{format_memory(run.pool_memory)} · {len(summary.instances)} instances, "
        f"{len(attempts)} attempts, {len(retried)} retried, {len(ooms)} out-of-memory kills"
        "</div>",
        "<div class='chips'>"
        + "".join(f"<span style='background:{COLORS[k]}'>{k} {n}</span>" for k, n in chips if n)
        + "</div>",
        "<h2>Graph</h2>",
        _graph(summary, pipeline),
        "<h2>Timeline</h2>",
        _timeline(summary, run.started_at, ended),
        "<h2>Resources: requested and used, per step</h2>",
        _resources(summary),
        "<h2>Failures</h2>",
        _failures(summary, log_tail),
        "<h2>Retries and out-of-memory kills</h2>",
        _retries(retried),
        "<h2>Reproducibility</h2>",
        _reproducibility(summary),
        "</body></html>",
    ]
    return "\n".join(parts)


def _state(inst: InstanceSummary) -> str:
    return CACHED if inst.row.cached else inst.row.state


def _outcome(attempt: AttemptRow) -> str:
    if attempt.state == AttemptState.SUCCEEDED:
        return AttemptState.SUCCEEDED.value
    if attempt.reason in (Reason.OOM, Reason.TIMEOUT, Reason.LOST):
        return attempt.reason
    if attempt.state == AttemptState.INTERRUPTED:
        return AttemptState.INTERRUPTED.value
    return AttemptState.FAILED.value


def _steps(summary: RunSummary, pipeline: Pipeline | None) -> dict[str, list[str]]:
    """Each step with the steps it reads from (from the pipeline file when it is known)."""
    steps: dict[str, list[str]] = {}
    for inst in summary.instances:
        steps.setdefault(inst.row.step, [])
    if pipeline is not None:
        for name in steps:
            if name in pipeline.steps:
                steps[name] = [u for u in pipeline.steps[name].upstream if u in steps]
    return steps


def _graph(summary: RunSummary, pipeline: Pipeline | None) -> str:
    steps = _steps(summary, pipeline)
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            ups = [u for u in steps[name] if u not in seen]
            depth[name] = 1 + max((level(u, seen | {name}) for u in ups), default=-1)
        return depth[name]

    layers: dict[int, list[str]] = {}
    for name in steps:
        layers.setdefault(level(name), []).append(name)
    width = max(len(v) for v in layers.values()) * (NODE_W + GAP_X) + GAP_X
    height = len(layers) * (NODE_H + GAP_Y) + GAP_Y
    where: dict[str, tuple[int, int]] = {}
    for row, names in sorted(layers.items()):
        for col, name in enumerate(names):
            where[name] = (GAP_X + col * (NODE_W + GAP_X), GAP_Y // 2 + row * (NODE_H + GAP_Y))
    by_step: dict[str, list[InstanceSummary]] = {}
    for inst in summary.instances:
        by_step.setdefault(inst.row.step, []).append(inst)
    out = [
        f"<svg class='graph' width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    for name, ups in steps.items():
        x, y = where[name]
        for up in ups:
            ux, uy = where[up]
            stream = pipeline is not None and pipeline.steps[name].stdin == up
            out.append(
                f"<path class='edge{' stream' if stream else ''}' d='M{ux + NODE_W // 2},"
                f"{uy + NODE_H} L{x + NODE_W // 2},{y}'/>"
            )
    for name, (x, y) in where.items():
        members = by_step[name]
        total = len(members)
        out.append(
            f"<g class='node' data-step='{escape(name)}'>"
            f"<title>{escape(name)}: {total} instance(s)</title>"
            f"<rect class='box' x='{x}' y='{y}' width='{NODE_W}' height='{NODE_H}' rx='6'/>"
            f"<text x='{x + 8}' y='{y + 20}'>{escape(name)}</text>"
        )
        offset = 0.0
        for state in (
            Phase.SUCCEEDED.value,
            CACHED,
            *(p.value for p in (Phase.FAILED, Phase.BLOCKED, Phase.INTERRUPTED)),
            *(p.value for p in (Phase.PENDING, Phase.RUNNING)),
        ):
            n = sum(1 for m in members if _state(m) == state)
            if n:
                w = (NODE_W - 16) * n / total
                out.append(
                    f"<rect class='state {state}' x='{x + 8 + offset:.1f}' y='{y + 32}' "
                    f"width='{w:.1f}' height='12' fill='{COLORS[state]}'>"
                    f"<title>{state}: {n}</title></rect>"
                )
                offset += w
        out.append(
            f"<text x='{x + NODE_W - 8}' y='{y + 20}' text-anchor='end' "
            f"fill='#5b6270'>{total}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _lanes(attempts: list[AttemptRow], end: float) -> list[_Bar]:
    """Give each attempt the first lane free at its start: lanes are concurrency slots."""
    lanes: list[float] = []
    bars = []
    for a in sorted(attempts, key=lambda a: (a.started_at, a.instance)):
        finish = a.ended_at or end
        lane = next((i for i, free in enumerate(lanes) if free <= a.started_at), len(lanes))
        if lane == len(lanes):
            lanes.append(finish)
        else:
            lanes[lane] = finish
        bars.append(_Bar(a, lane, _outcome(a)))
    return bars


def _timeline(summary: RunSummary, start: float, end: float) -> str:
    attempts = [a for i in summary.instances for a in i.attempts]
    if not attempts:
        return "<p>No container ran: every instance was cached.</p>"
    bars = _lanes(attempts, end)
    lanes = max(b.lane for b in bars) + 1
    span = max(end - start, 1e-3)
    height = lanes * LANE_H + 40
    out = [
        f"<svg class='timeline' width='{LEFT + CHART_W + 20}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>"
    ]
    for lane in range(lanes):
        out.append(f"<text x='4' y='{lane * LANE_H + 13}' fill='#5b6270'>slot {lane + 1}</text>")
    for tick in range(11):
        x = LEFT + CHART_W * tick / 10
        out.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='0' y2='{lanes * LANE_H + 4}' "
            f"stroke='#e3e6ea'/><text x='{x:.1f}' y='{lanes * LANE_H + 20}' "
            f"text-anchor='middle' fill='#5b6270'>{format_seconds(span * tick / 10)}"
            "</text>"
        )
    for bar in bars:
        a = bar.attempt
        x = LEFT + CHART_W * (a.started_at - start) / span
        w = max(CHART_W * ((a.ended_at or end) - a.started_at) / span, 1.5)
        label = (
            f"{a.instance} attempt {a.number}: {bar.outcome}, "
            f"{format_seconds((a.ended_at or end) - a.started_at)}"
        )
        out.append(
            f"<rect class='attempt {bar.outcome}' x='{x:.1f}' y='{bar.lane * LANE_H + 2}' "
            f"width='{w:.1f}' height='{LANE_H - 4}' rx='2' fill='{COLORS[bar.outcome]}'>"
            f"<title>{escape(label)}</title></rect>"
        )
    out.append("</svg>")
    return "".join(out)


def _resources(summary: RunSummary) -> str:
    rows = [
        "<table class='resources'><tr><th>step</th><th class='num'>CPUs asked</th>"
        "<th class='num'>CPUs reserved</th><th class='num'>CPU used</th>"
        "<th class='num'>memory asked</th><th class='num'>peak memory</th><th>note</th></tr>"
    ]
    for sizing in step_sizing(summary):
        if not sizing.ran:
            rows.append(
                f"<tr><td>{escape(sizing.step)}</td><td colspan='6'>cached: nothing ran</td></tr>"
            )
            continue
        notes = [
            f"<span class='flag'>{escape(n)}</span>" if "near" in n else escape(n)
            for n in sizing.notes
        ]
        rows.append(
            f"<tr><td>{escape(sizing.step)}</td><td class='num'>{sizing.cpus:g}</td>"
            f"<td class='num'>{_number(sizing.reserved)}</td>"
            f"<td class='num'>{_number(sizing.used)}</td>"
            f"<td class='num'>{format_memory(sizing.memory or 0)}</td>"
            f"<td class='num'>{'-' if sizing.peak is None else format_memory(sizing.peak)}</td>"
            f"<td>{', '.join(notes)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _failures(summary: RunSummary, log_tail: Callable[[AttemptRow], str]) -> str:
    failed = [i for i in summary.instances if i.row.state == Phase.FAILED]
    if not failed:
        return "<p class='ok'>No instance failed.</p>"
    out = []
    for inst in failed:
        last = inst.attempts[-1] if inst.attempts else None
        out.append(
            f"<div class='failure'><h3>{escape(inst.row.instance)}</h3>"
            f"<p>{escape(inst.row.reason or '')}</p>"
        )
        if last is not None:
            out.append(f"<pre>{escape(log_tail(last)) or '(no output)'}</pre>")
        out.append("</div>")
    return "".join(out)


def _retries(retried: list[InstanceSummary]) -> str:
    if not retried:
        return "<p>None.</p>"
    rows = [
        "<table><tr><th>instance</th><th>attempt</th><th>outcome</th><th>exit</th>"
        "<th class='num'>memory</th><th class='num'>peak</th></tr>"
    ]
    for inst in retried:
        for a in inst.attempts:
            rows.append(
                f"<tr><td>{escape(a.instance)}</td><td>{a.number}</td><td>{_outcome(a)}</td>"
                f"<td>{'' if a.exit_code is None else a.exit_code}</td>"
                f"<td class='num'>{format_memory(a.memory)}</td><td class='num'>"
                f"{'-' if a.peak_memory is None else format_memory(a.peak_memory)}</td></tr>"
            )
    rows.append("</table>")
    return "".join(rows)


def _reproducibility(summary: RunSummary) -> str:
    images = json.loads(summary.run.images or "{}")
    packages = json.loads(summary.run.image_packages or "{}")
    rows = [
        f"<table><tr><th>pipeline file sha256</th><td><code>"
        f"{escape(summary.run.spec_sha256)}</code></td></tr>"
    ]
    for name, value in sorted(json.loads(summary.run.params or "{}").items()):
        rows.append(
            f"<tr><th>param {escape(name)}</th><td><code>{escape(json.dumps(value))}</code>"
            "</td></tr>"
        )
    for ref, digest in sorted(images.items()):
        made_of = ""
        if ref in packages:  # the versions of the tools a Debian image was made with
            made_of = f"<br><span class='meta'>{escape(packages[ref])}</span>"
        rows.append(
            f"<tr><th>image {escape(ref)}</th><td><code>{escape(digest)}</code>{made_of}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def tail(path: str | None, lines: int = 20) -> str:
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_bytes()[-16384:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
