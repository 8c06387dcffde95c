"""Show a run as it happens: a live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dockyard.events import Event
from dockyard.lifecycles import INSTANCE, IllegalTransition, InstanceEvent, Phase, advance
from dockyard.terminal import printable
from dockyard.units import format_memory, format_seconds

_STATES = (Phase.PENDING, Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.BLOCKED)
# What each event the journal reports moves an instance by (the journal has made the same
# move, by the same table, as it wrote the instance's row).
_MOVES = {
    "started": InstanceEvent.STARTED,
    "adopted": InstanceEvent.ADOPTED,
    "succeeded": InstanceEvent.COMMITTED,
    "cached": InstanceEvent.REUSED,
    "blocked": InstanceEvent.UPSTREAM_FAILED,
    "failed": InstanceEvent.GAVE_UP,
    "retrying": InstanceEvent.RETRY,
    "output-lost": InstanceEvent.OUTPUT_LOST,
}


class PlainProgress:
    """One line per event: for logs, pipes and CI."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def __call__(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        line = printable(_describe(event))
        if line:
            print(f"{stamp} {line}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveProgress:
    """A panel with counts per state, running instances with elapsed time, and the ETA."""

    def __init__(self, console: Console):
        self.console = console
        self.state: dict[str, Phase] = {}
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.began = time.time()
        self.total = 0
        self.live = Live(
            self._render(),
            console=console,
            refresh_per_second=4,
            get_renderable=self._render,
            transient=False,
        )
        self.live.start()

    def __call__(self, event: Event) -> None:
        name = event.instance
        if event.kind == "run-started":
            self.total = int(event.detail["instances"])
            self.began = event.at
        elif name is not None and event.kind in _MOVES:
            before = self.state.get(name, Phase.PENDING)
            try:
                state = advance(INSTANCE, before, _MOVES[event.kind])
            except IllegalTransition:  # (the journal made this move first: never, but a
                return  # display must not end a run)
            self.state[name] = state
            if state is Phase.RUNNING:
                self.started[name] = event.at
            elif name in self.started:
                since = self.started.pop(name)
                if state is not Phase.PENDING:  # (an attempt that will run again: no mean)
                    self.durations.append(event.at - since)
        if event.kind in (
            "failed",
            "retrying",
            "output-lost",
            "image",
            "recovered",
            "engine",
            "service",
        ):
            line = printable(_describe(event))
            if line:
                self.live.console.print(Text(line), soft_wrap=True)

    def _render(self) -> Group:
        counts = Counter(self.state.values())
        counts[Phase.PENDING] = self.total - sum(counts[s] for s in _STATES[1:])
        elapsed = time.time() - self.began
        header = Text.assemble(
            ("dockyard ", "bold"),
            *[(f"{s} {counts[s]}  ", _STYLE[s]) for s in _STATES],
            (f"elapsed {format_seconds(elapsed)}", "dim"),
        )
        left = counts[Phase.PENDING] + counts[Phase.RUNNING]
        if self.durations and left:
            slots = max(1, len(self.started))
            mean = sum(self.durations) / len(self.durations)
            header.append(f"  ~{format_seconds(mean * left / slots)} left", "dim")
        table = Table.grid(padding=(0, 2))
        now = time.time()
        for name, since in sorted(self.started.items(), key=lambda kv: kv[1])[:12]:
            table.add_row(Text(printable(name), "cyan"), format_seconds(now - since))
        if len(self.started) > 12:
            table.add_row(Text(f"… and {len(self.started) - 12} more", "dim"), "")
        return Group(header, table)

    def close(self) -> None:
        self.live.stop()


_STYLE = {
    Phase.PENDING: "white",
    Phase.RUNNING: "cyan",
    Phase.SUCCEEDED: "green",
    Phase.FAILED: "red",
    Phase.BLOCKED: "yellow",
}


def _describe(event: Event) -> str:
    d = event.detail
    match event.kind:
        case "run-started":
            return (
                f"run {d['run']}: {d['instances']} instance(s), pool {d['cpus']:g} CPUs, "
                f"{format_memory(int(d['memory']))}"
            )
        case "image":
            return str(d["message"])
        case "started":
            where = f" on {d['node_name']}" if d.get("node_name") else ""
            return f"started   {event.instance} (attempt {d['attempt']}){where}"
        case "cached":
            return f"cached    {event.instance}"
        case "adopted":
            return f"adopted   {event.instance} (still running from run {d['from']})"
        case "recovered":
            return f"run {d['run']} had stopped without finishing: recovering its work"
        case "engine" | "service":
            return str(d["message"])
        case "volume":
            return f"volume {d['volume']}: snapshot {d['snapshot']} ({d['when']} the run)"
        case "succeeded":
            return f"succeeded {event.instance}"
        case "retrying":
            return f"retrying  {event.instance}: attempt {d['attempt']} {d['message']}"
        case "failed":
            return f"FAILED    {event.instance}: attempt {d['attempt']} {d['message']}"
        case "blocked":
            return f"blocked   {event.instance}: upstream {d['because']} failed"
        case "output-lost":
            return f"again     {event.instance}: {d['message']}"
        case "run-ended":
            return f"run {d['run']} {d['state']}"
    return ""
