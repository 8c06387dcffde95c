"""The run loop: observe, plan, apply, until the planner says the run is over.

It is the only place where what was observed (results, cache answers) meets what was
decided (the planner's actions), and it decides nothing itself: each action is carried out
by the collaborator that owns it. One turn:

1. *settle*: resolve every unit whose upstreams have all succeeded (keys, cache, dead
   runs' containers) and apply what the planner makes of each (reuse, adopt, or ready);
2. *plan*: ask the planner what to block and what to start, and apply it;
3. *observe*: take the results that came back, tell the planner, apply its verdicts
   (kill stream partners, commit, retry, fail);
4. flush the journal, then let the workers remove the containers whose results are safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from dockyard.errors import EngineUnavailable, RuntimeFailure
from dockyard.execution.attempts import Notice, Result
from dockyard.execution.conclusion import Conclusion
from dockyard.execution.dispatch import Dispatch
from dockyard.execution.feed import Ended, Feed
from dockyard.execution.journal import RunJournal
from dockyard.execution.launcher import Launcher
from dockyard.execution.ports import OutputsLost
from dockyard.execution.resolution import Resolver
from dockyard.planning.actions import (
    Action,
    Adopt,
    Block,
    Commit,
    Fail,
    Kill,
    Reason,
    Retry,
    Reuse,
    Start,
)
from dockyard.planning.graph import InstanceId
from dockyard.planning.planner import Planner
from dockyard.planning.schedule import Capacity

STALE_ROWS = 0.2  # seconds rows may wait to be written when nothing else happens
NODE_REFRESH = 2.0  # seconds between looks at a cluster's nodes (which are down, which back)
NODE_WAIT = 300.0  # how long ready work that fits no node that is up waits for one to return


class RunLoop:
    def __init__(
        self,
        planner: Planner,
        resolver: Resolver,
        launcher: Launcher,
        conclusion: Conclusion,
        dispatch: Dispatch,
        journal: RunJournal,
        clock: Callable[[], float],
        *,
        cache: bool = True,
        nodes: Callable[[], Mapping[str, Capacity]] | None = None,
        node_names: Mapping[str, str] | None = None,
        feed: Feed | None = None,
    ):
        self.planner = planner
        self.resolver = resolver
        self.launcher = launcher
        self.conclusion = conclusion
        self.dispatch = dispatch
        self.journal = journal
        self.clock = clock
        self.cache = cache
        self.nodes = nodes  # the pool as it is now; None: one machine, nothing to watch
        self.nodes_seen_at = clock()
        self.node_names = node_names or {}
        self.stuck_since: float | None = None  # since when ready work has fitted no node
        self.feed = feed  # work handed over while the run goes on

    def run(self) -> None:
        while True:
            self._take_handed_over()
            self.settle()
            self.watch_nodes()
            plan = self.planner.next(self.clock())
            for action in plan.actions:
                self.apply(action)
            if not plan.finished:
                self.stuck_since = None
            elif self._waiting_for_nodes():
                pass  # (a node that is down may come back)
            elif self.feed is not None and self.feed.open() and self.stuck_since is None:
                pass  # what comes next is decided by what has ended: wait for it
            else:  # (done; or what is ready fitted no node for NODE_WAIT: it never will)
                self.journal.flush()
                return
            timeout = None if plan.wake_at is None else max(0.0, plan.wake_at - self.clock())
            if self.journal.pending:
                # Under load the rows of several turns go in one transaction; when nothing
                # comes back for a while, what has started is written all the same.
                timeout = STALE_ROWS if timeout is None else min(timeout, STALE_ROWS)
            if self.nodes is not None:
                timeout = NODE_REFRESH if timeout is None else min(timeout, NODE_REFRESH)
            items = self.dispatch.take(timeout)
            if not items:
                self.journal.flush()
                continue
            concluded: list[tuple[object, int]] = []
            for item in items:
                if isinstance(item, Notice):
                    self.journal.report(item.event)
                elif isinstance(item, Result):
                    concluded += self.observe(item)
            self.journal.flush()  # results on disk before their containers go
            self.dispatch.acknowledge(concluded)  # type: ignore[arg-type]

    def _take_handed_over(self) -> None:
        if self.feed is None:
            return
        for instance in self.feed.take():
            self.planner.add(instance)
            self.journal.added(instance.id)

    def _waiting_for_nodes(self) -> bool:
        """When nothing runs and the ready work fits no node that is up, the nodes that are
        down get up to NODE_WAIT seconds to come back (looked at every NODE_REFRESH seconds)
        before the run ends without that work."""
        if self.nodes is None or not self.planner.waiting_for_room():
            self.stuck_since = None
            return False
        now = self.clock()
        if self.stuck_since is None:
            self.stuck_since = now
        return now - self.stuck_since <= NODE_WAIT

    def watch_nodes(self) -> None:
        """Every few seconds, tell the planner which nodes can take work."""
        if self.nodes is None or self.clock() - self.nodes_seen_at < NODE_REFRESH:
            return
        # (A manager that refuses once is asked again next time; one that is away is waited
        # for by the patient runtime.)
        with contextlib.suppress(RuntimeFailure):
            self.planner.nodes_changed(self.nodes())
        self.nodes_seen_at = self.clock()

    def settle(self) -> None:
        """Resolve what can be, as far as cache hits reach (a chain of hits in one turn)."""
        while units := self.planner.resolvable():
            resolutions = self.resolver.resolve(units, cache=self.cache)
            for unit, resolution in zip(units, resolutions, strict=True):
                actions = self.planner.resolved(unit, resolution)
                if not any(isinstance(a, Reuse) for a in actions):
                    for member in unit:
                        self.journal.keyed(member, self.resolver.known.keys[member])
                for action in actions:
                    self.apply(action)
        self.resolver.hasher.flush()

    def observe(self, result: Result) -> list[tuple[object, int]]:
        """Tell the planner how an attempt ended; returns the attempts now concluded."""
        if isinstance(result.error, EngineUnavailable):
            raise result.error  # the engine stayed away longer than the patience
        outcome = self.conclusion.ended(result)
        if outcome.reason is Reason.LOST:
            self.nodes_seen_at = float("-inf")  # its node may be gone: look before placing
        if isinstance(result.error, OutputsLost):  # (before its end: it retries waiting)
            self._outputs_lost(result.instance, result.error.digests)
        concluded: list[tuple[object, int]] = []
        for action in self.planner.ended(result.instance, result.attempt, outcome, self.clock()):
            self.apply(action)
            if isinstance(action, Commit | Retry | Fail):
                concluded.append((action.instance, action.attempt))
        return concluded

    def _outputs_lost(self, reader: InstanceId, digests: tuple[str, ...]) -> None:
        """What ``reader`` could not get is kept on no node that is up: made again."""
        graph, known = self.launcher.graph, self.resolver.known
        sources = {
            mount.source
            for member in graph.group(reader)
            for mount in graph.instances[member].upstream
            if known.outputs.get(mount.source) in digests
        }
        for again in self.planner.outputs_lost(sorted(sources, key=str)):
            self.journal.output_lost(again)

    def apply(self, action: Action) -> None:
        if isinstance(action, Start):
            self._start(action)
        elif isinstance(action, Block):
            self.journal.blocked(action.instance, action.because)
        elif isinstance(action, Reuse):
            digest = self.resolver.reused(action.instance)
            key = self.resolver.known.keys[action.instance]
            self.journal.cached(action.instance, key, digest)
            if self.feed is not None:
                exit_code = self.resolver.store.cached_exit_code(key)
                self.feed.ended(Ended(action.instance, digest, exit_code, cached=True))
        elif isinstance(action, Adopt):
            self._adopt(action)
        elif isinstance(action, Kill):
            self.dispatch.kill(action.instance, action.attempt)
        elif isinstance(action, Commit):
            digest, exit_code = self.conclusion.commit(action)
            if self.feed is not None:
                self.feed.ended(Ended(action.instance, digest, exit_code))
        else:
            self.conclusion.give_up_or_retry(action)
            if self.feed is not None and isinstance(action, Fail):
                code = action.outcome.exit_code
                self.feed.ended(Ended(action.instance, None, code, message=action.message))

    def _start(self, action: Start) -> None:
        iid, attempt = action.instance, action.attempt
        launch = self.launcher.launch(action)
        self.conclusion.expect(iid, attempt, launch.staging, launch.log)
        instance = self.launcher.graph.instances[iid]
        node = action.node
        self.journal.started(
            iid,
            attempt,
            instance.cpus,
            action.memory,
            str(launch.log),
            node,
            node_name=self.node_names.get(node),
            usage_key=instance.usage_key,
            reserved=action.reserved,
            basis=action.basis,
        )
        if launch.order is None:
            assert launch.failure is not None
            self.dispatch.fail(iid, attempt, launch.failure, self.clock())
        else:
            self.dispatch.submit(launch.order)

    def _adopt(self, action: Adopt) -> None:
        launch = self.launcher.adopt(action)
        assert launch.order is not None
        instance = self.launcher.graph.instances[action.instance]
        reservation = self.planner.reserved.get(action.instance)
        self.conclusion.expect(action.instance, 1, launch.staging, launch.log)
        self.journal.started(
            action.instance,
            1,
            instance.cpus,
            instance.memory,
            str(launch.log),
            action.orphan.node,
            adopted_from=action.orphan.run_id,
            node_name=self.node_names.get(action.orphan.node),
            # (no usage key: its CPU time covers a life that began before this attempt's
            # start, so what it used cannot be told)
            reserved=reservation.cpus if reservation else None,
            basis=reservation.basis if reservation else "declared",
        )
        self.dispatch.submit(launch.order)
