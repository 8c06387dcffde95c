"""The node agent's front door under a flood from a signed client's own address, a disk
that refuses the nonce journal, a log nobody reads, and trees of many small files sent to
an agent that is slow with them: the real AgentServer on loopback, every load bounded in
count and in time (see test_agent_limits.py for the rest)."""

from __future__ import annotations

import contextlib
import io
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent import auth, node_volumes
from dockyard.agent import server as server_module
from dockyard.agent.client import AgentError
from dockyard.agent.gate import ACCEPTS_AT_ONCE, HEADS_PER_PEER
from dockyard.agent.pace import Pace, Rate
from dockyard.agent.quietlog import QuietLog, escape, to_stderr
from dockyard.agent.trees import Bounds, write_tree
from dockyard.disk import sealing
from tests.unit.agent_helpers import KEY, serving, signed_client
from tests.unit.test_agent_limits import _connect, _signed_at, _status

SECONDS = 20.0  # the most any wait here takes (none of them is a measure of speed)


def _signed_head(method: str, path: str, extra: dict[str, str] | None = None) -> bytes:
    headers = {**auth.sign_request(KEY, "nodea", method, path, b""), **(extra or {})}
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- a flood from a signed client's address (1) -----------------------------------------------


def test_a_flood_of_connects_from_a_signed_clients_address_resets_none_of_its_calls(
    tmp_path,
) -> None:
    """One flooder opens and closes connections from 127.0.0.1 as fast as it can (at most
    5,000, or 5 s); a signed client there gets all its answers meanwhile."""
    assert ACCEPTS_AT_ONCE < HEADS_PER_PEER // 2  # (what one pass admits never fills the cap)
    with serving(tmp_path) as server:
        stop = threading.Event()
        flooded = [0]

        def flood() -> None:
            address = ("127.0.0.1", server.server_address[1])
            deadline = time.monotonic() + 5.0
            while not stop.is_set() and flooded[0] < 5000 and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    socket.create_connection(address, timeout=5).close()
                flooded[0] += 1

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        client = signed_client(server)
        failures: list[str] = []
        during = 0
        try:
            for _ in range(200):
                try:
                    assert client.health()["node"] == "nodea"
                except AgentError as exc:
                    failures.append(str(exc))
                during += flooder.is_alive()
        finally:
            stop.set()
            flooder.join(SECONDS)
        assert failures == []
        assert during and flooded[0] > 0  # (the calls were made while it flooded)
        assert server.gate.stats["accepted"] >= 200 + min(flooded[0], 1)


def test_a_head_already_sent_is_read_at_the_accept(tmp_path) -> None:
    """A connection whose head came with it is served from the accept: 40 from one address
    at once, their heads sent before the gate takes any, all answered."""
    with serving(tmp_path) as server:
        socks = []
        try:
            server.gate.stop()  # (the gate pauses: the connects wait in the backlog)
            _wait(lambda: server._serving.is_set(), "the gate paused")
            for _ in range(40):
                sock = _connect(server)
                sock.sendall(_signed_head("GET", "/v1/health"))
                socks.append(sock)
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            assert [_status(sock) for sock in socks] == [200] * 40
            assert server.gate.stats["refused"] == 0
        finally:
            for sock in socks:
                sock.close()


def _wait(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SECONDS
    while not done():
        assert time.monotonic() < deadline, f"not {what} within {SECONDS} s"
        time.sleep(0.01)


# -- the nonce journal (2, 3) -----------------------------------------------------------------


def test_signed_calls_are_served_when_the_nonce_journal_cannot_be_written(tmp_path) -> None:
    lines: list[str] = []
    with serving(tmp_path, log=QuietLog(lines.append)) as server:
        verifier = server.store.verifier
        assert verifier.journal is not None
        journal = verifier.journal.path
        journal.unlink(missing_ok=True)
        for path in (journal, journal.with_name(f"{journal.name}.new")):
            path.symlink_to("/dev/full")  # (a disk that is full: every write is ENOSPC)
        client = signed_client(server)
        for _ in range(5):
            assert client.health()["node"] == "nodea"
        client.call("POST", "work/clear", {"project": "proj1"})  # (what frees space)
        head = _signed_head("GET", "/v1/health")
        with _connect(server) as sock:
            sock.sendall(head)
            assert _status(sock) == 200
        with _connect(server) as sock:  # the same request again: still known in memory
            sock.sendall(head)
            assert _status(sock) == 403
        assert verifier.flush(SECONDS)
        assert server.log.written(SECONDS)
        assert sum("cannot write" in line for line in lines) == 1, lines  # (told once)

        for path in (journal, journal.with_name(f"{journal.name}.new")):
            path.unlink()  # room again: the next write puts back what could not be
        assert client.health()["node"] == "nodea"
        assert verifier.flush(SECONDS)
    restarted = auth.Verifier(KEY, "nodea", journal)
    with pytest.raises(auth.AuthError, match="replay"):
        restarted.check("GET", "/v1/health", _headers(head))


def _headers(head: bytes) -> dict[str, str]:
    fields = head.decode().split("\r\n")[1:-2]
    return dict(field.split(": ", 1) for field in fields)


def test_expired_nonces_are_forgotten_and_fresh_ones_kept() -> None:
    start = time.time()
    now = [start]
    verifier = auth.Verifier(KEY, "nodea", clock=lambda: now[0])
    old = _signed_at(f"{start:.3f}")
    verifier.check("GET", "/v1/health", old)
    now[0] = start + auth.MAX_SKEW - 1  # (just in time: the sent time is rounded)
    fresh = _signed_at(f"{now[0]:.3f}")
    verifier.check("GET", "/v1/health", fresh)
    with pytest.raises(auth.AuthError, match="replay"):
        verifier.check("GET", "/v1/health", old)  # (still in time, and still known)
    now[0] = start + 2 * auth.MAX_SKEW + 1  # the first is now out of time for any request
    newest = _signed_at(f"{now[0]:.3f}")
    verifier.check("GET", "/v1/health", newest)
    assert set(verifier._seen) == {fresh[auth.NONCE], newest[auth.NONCE]}
    assert len(verifier._order) == 2
    with pytest.raises(auth.AuthError, match="replay"):
        verifier.check("GET", "/v1/health", newest)


# -- trees of many small files (4) ------------------------------------------------------------

FILES = 4000  # empty files: the stream is ~60 kB; what counts is what is done per entry


def _many_files(folder: Path) -> Path:
    folder.mkdir()
    for n in range(FILES):
        (folder / f"f{n:05}").touch()
    return folder


def test_a_tree_of_many_empty_files_put_to_an_agent_slow_to_seal_it_is_kept(
    tmp_path, monkeypatch
) -> None:
    """The agent takes longer to build and seal than the sender's floor and every entry's
    allowance: the sender waits for its answer as for any call's."""
    real = server_module.receive_tree

    def slow(*args: Any, **kwargs: Any) -> Any:
        kept = real(*args, **kwargs)
        time.sleep(1.0)  # (a slow disk's seal)
        return kept

    monkeypatch.setattr(server_module, "receive_tree", slow)
    source = _many_files(tmp_path / "many")
    digest = sealing.tree_digest(source)[0]
    rate = Rate(floor=0.2, bytes_per_second=1 << 20, entry_bytes=10)  # (~40 ms for all)
    with serving(tmp_path) as server:
        answer = signed_client(server, rate).put_tree(digest, source)
        assert "kept" not in answer  # (it was kept or the answer is a refusal)
        assert (server.store.outputs() / digest / "f03999").is_file()


def test_a_tree_of_many_empty_files_fetched_from_an_agent_slow_to_walk_it_comes(
    tmp_path, monkeypatch
) -> None:
    """Each entry counts as bytes moved: an agent whose walk takes longer than the floor
    (and than the stream's bytes allow) is not cut off."""
    source = _many_files(tmp_path / "many")
    digest = sealing.tree_digest(source)[0]
    real = server_module.write_tree

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)  # (a cold disk's walk: ~0.1 ms an entry)
        return real(*args, **kwargs)

    rate = Rate(floor=0.2, bytes_per_second=1 << 20)  # (the default 512 bytes an entry)
    with serving(tmp_path) as server:
        signed_client(server).put_tree(digest, source)
        monkeypatch.setattr(server_module, "write_tree", slow)
        kept = signed_client(server, rate).fetch_into(digest, tmp_path / "store")
        assert (kept / "f03999").is_file()


def test_a_pace_allows_for_each_entry() -> None:
    now = [0.0]
    pace = Pace(Rate(floor=1.0, bytes_per_second=100, entry_bytes=50), lambda: now[0])
    pace.start()
    assert pace.left() == 1.0
    pace.entries(10)
    assert pace.left() == 6.0  # (10 entries: 500 bytes, 5 s)
    pace.await_answer()
    pace.start()
    assert pace.left() == 1.0  # (the answer to a tree sent: the floor, then its bytes)


# -- descriptors, answers, chunked (5, 6) -----------------------------------------------------


def test_the_agent_asks_for_65536_descriptors_within_the_hard_limit(monkeypatch) -> None:
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "setrlimit", lambda _, limits: asked.append(limits))
    for hard, wanted in [(resource.RLIM_INFINITY, 65536), (1 << 20, 65536), (20000, 20000)]:
        monkeypatch.setattr(resource, "getrlimit", lambda _, hard=hard: (1024, hard))
        server_module._more_files()
        assert asked.pop() == (wanted, hard)


@pytest.mark.parametrize("coding", ["CHUNKED", "Chunked", "chunked"])
def test_a_tree_sent_chunked_in_any_case_is_taken(tmp_path, coding: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    digest = sealing.tree_digest(empty)[0]
    stream = io.BytesIO()
    write_tree(empty, stream)
    data = stream.getvalue()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    bounds = Bounds.of(sealing.tree_tally(empty))
    path = f"/v1/objects/{digest}?{bounds.query()}"
    headers = auth.sign_request(KEY, "nodea", "PUT", path, None)
    lines = [f"PUT {path} HTTP/1.1", f"Transfer-Encoding: {coding}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with serving(tmp_path) as server, _connect(server) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        assert _status(sock) == 200
        assert (server.store.outputs() / digest).is_dir()


# -- the log (7) ------------------------------------------------------------------------------


def test_a_log_nobody_reads_does_not_stall_the_gate(tmp_path) -> None:
    """The log's pipe is full (its write blocks): refusals are still answered and signed
    calls served; the lines that found no room are counted once it is read again."""
    release = threading.Event()
    written: list[str] = []

    def blocked(text: str) -> None:
        release.wait(SECONDS)  # (bounded: released at the end, or after SECONDS)
        written.append(text)

    log = QuietLog(blocked, burst=10_000, queued=8)
    try:
        with serving(tmp_path, log=log) as server:
            for _ in range(50):  # 50 refusals, each a line: the first blocks the writer
                with _connect(server) as sock:
                    sock.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
                    assert _status(sock) == 403
            assert signed_client(server).health()["node"] == "nodea"
            assert not written  # (the writer is still blocked: nothing waited on it)
    finally:
        release.set()
    assert log.written(SECONDS)
    assert len(written) <= 8 + 2  # (what the queue held, the blocked line, the count)
    assert any("lines lost" in line for line in written), written


def test_a_volumes_log_line_is_escaped(capsys) -> None:
    message = "unmount of x\x1b[2J\n\x00: refused"  # (a name or an error a peer gave)
    to_stderr(message)
    assert capsys.readouterr().err == "agent: " + escape(message, 800) + "\n"
    assert "\x1b" not in escape(message)
    field = node_volumes.NodeVolumes.__dataclass_fields__["log"]
    assert field.default is to_stderr
