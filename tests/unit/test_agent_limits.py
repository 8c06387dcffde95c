"""The node agent against a hostile network (issue 21): the real AgentServer on loopback,
held and flooded by connections with no key, and peers that trickle. Every load here is
bounded in count and in time; traffic goes to 127.0.0.1 only (from other loopback source
addresses where a test needs peers of its own)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockyard.agent import auth
from dockyard.agent.chunked import MAX_CHUNK, MAX_TRAILERS, Chunked
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.gate import Limits
from dockyard.agent.head import MAX_FIELDS, MAX_HEAD, MAX_LINE, METHODS, HeadError, parse, split
from dockyard.agent.pace import Rate
from dockyard.agent.quietlog import LINE_CHARS, WRITERS, escape
from dockyard.agent.server import AgentServer
from dockyard.agent.trees import Bounds, TreeError
from tests.unit.agent_helpers import KEY, serving, signed_client

FAR = 600.0  # a head deadline no test waits for: what closes early is not that deadline
ROOMY = Bounds(1 << 30, 1 << 30, 1000, 1000)  # (what a test's stream holds is well within)


def _connect(server: AgentServer, source: str = "127.0.0.1") -> socket.socket:
    address = ("127.0.0.1", server.server_address[1])
    return socket.create_connection(address, timeout=10, source_address=(source, 0))


def _wait_for(done: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """A bounded wait for something the server does on its own thread."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not {what} within {seconds} s"
        time.sleep(0.01)


def _closed(sock: socket.socket | None) -> bool:
    """Closed by the server (FIN or reset) without this side sending anything more."""
    if sock is None:
        return True
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _still_open(socks: list[socket.socket]) -> bool:
    poll = select.poll()  # (not select(): these descriptors may be past 1024)
    for sock in socks:
        poll.register(sock, select.POLLIN)
    return not poll.poll(0)  # (a closed one is readable at once)


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(256)
        assert piece, f"closed without an answer after {data!r}"
        data += piece
    return int(data.split(b" ")[1])


def _threads() -> int:
    """Threads, but for the agent's log and journal writers (one each, when busy)."""
    return sum(thread.name not in WRITERS for thread in threading.enumerate())


def _enough_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count:
        pytest.skip(f"{count} descriptors needed, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


# -- connections ------------------------------------------------------------------------------


def test_a_signed_call_gets_through_a_thousand_idle_and_slow_connections(tmp_path) -> None:
    _enough_files(4096)
    with serving(tmp_path, Limits(head_seconds=FAR)) as server:  # (the budgets, not time)
        threads = _threads()
        held: list[socket.socket] = []
        try:
            for n in range(1000):  # 40 addresses, 25 each: each under its own cap
                held.append(_connect(server, f"127.0.0.{2 + n % 40}"))
            slow = [_connect(server, f"127.0.0.{100 + n}") for n in range(20)]
            held += slow
            for sock in slow:  # a head begun, a byte now and then, never its end
                sock.sendall(b"GET /v1/health HTTP/1.1\r\nX-Slow: ")
            _wait_for(lambda: server.gate.stats["accepted"] >= 1020, "all accepted")
            for sock in slow:
                sock.sendall(b"1")
            assert len(server.gate.heads) == server.limits.heads  # the budget is full...
            assert _threads() == threads  # ...and holds no thread

            assert signed_client(server).health()["node"] == "nodea"

            assert server.gate.stats["evicted"] >= 1020 + 1 - server.limits.heads
            assert _still_open(slow)  # (the newest were kept: the oldest made room)
        finally:
            for sock in held:
                sock.close()


def test_connections_over_the_cap_of_one_address_close_its_oldest_at_once(tmp_path) -> None:
    limits = Limits(head_seconds=FAR)
    with serving(tmp_path, limits) as server:
        threads = _threads()
        old = [_connect(server, "127.0.0.9") for _ in range(limits.heads_per_peer)]
        new = [_connect(server, "127.0.0.9") for _ in range(8)]
        try:
            _wait_for(lambda: server.gate.stats["refused"] == 8, "eight over the cap")
            for sock in old[:8]:  # nothing sent on them: the oldest closed in the accept path
                assert _closed(sock)
            assert _still_open(old[8:] + new)
            assert server.gate.per_peer["127.0.0.9"] == limits.heads_per_peer
            assert _threads() == threads
        finally:
            for sock in old + new:
                sock.close()


def test_a_signed_call_gets_through_from_the_address_of_a_thousand_idle_connections(
    tmp_path,
) -> None:
    """An attacker that shares dockyard's address (a step on dockyard's node) does not
    shut dockyard out: its own idle connections make room."""
    _enough_files(4096)
    with serving(tmp_path, Limits(head_seconds=FAR)) as server:
        held = [_connect(server, "127.0.0.1") for _ in range(1000)]
        try:
            # (the gate counts a connection as accepted before it is admitted: wait for both)
            _wait_for(lambda: server.gate.stats["accepted"] >= 1000, "all accepted")
            _wait_for(lambda: len(server.gate.heads) == server.limits.heads_per_peer, "admitted")
            assert server.gate.per_peer["127.0.0.1"] == server.limits.heads_per_peer
            assert signed_client(server).health()["node"] == "nodea"
        finally:
            for sock in held:
                sock.close()


def test_a_new_connection_pushes_out_the_oldest_head_when_the_budget_is_full(tmp_path) -> None:
    limits = Limits(head_seconds=FAR, heads=8)
    with serving(tmp_path, limits) as server:
        idle = [_connect(server, f"127.0.0.{20 + n}") for n in range(8)]
        try:
            _wait_for(lambda: len(server.gate.heads) == 8, "eight heads held")
            assert signed_client(server).health()["node"] == "nodea"
            assert _closed(idle[0])  # the oldest made room
            assert _still_open(idle[1:])
        finally:
            for sock in idle:
                sock.close()


def test_a_head_that_does_not_come_in_time_is_dropped(tmp_path) -> None:
    with (
        serving(tmp_path, Limits(head_seconds=0.3)) as server,
        _connect(server) as idle,
        _connect(server, "127.0.0.2") as slow,
    ):
        slow.sendall(b"GET /v1/health HTTP/1.1\r\n")
        for _ in range(40):  # a header line now and then, never the end of the head
            with contextlib.suppress(OSError):
                slow.sendall(b"X-Slow: 1\r\n")
            if server.gate.stats["late"] == 2:
                break
            time.sleep(0.05)
        assert _closed(idle) and _closed(slow)
        assert server.gate.stats["late"] == 2


def test_a_signed_request_over_the_served_budget_is_refused_signed(tmp_path) -> None:
    with serving(tmp_path, Limits(served=1, queued=0)) as server:
        path = "/v1/work/clear"
        body = b'{"project": "proj1"}'
        headers = auth.sign_request(KEY, "nodea", "POST", path, body)
        lines = [f"POST {path} HTTP/1.1", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        with _connect(server) as holding:  # its body never comes whole: it holds the slot
            holding.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body[:5])
            _wait_for(lambda: server.slots._value == 0, "the slot taken")
            with pytest.raises(AgentError) as caught:
                signed_client(server).health()
            assert caught.value.status == 503  # (its answer was signed: it was believed)
        _wait_for(lambda: server.slots._value == 1, "the slot given back")
        assert signed_client(server).health()["node"] == "nodea"


# -- heads ------------------------------------------------------------------------------------


def test_a_head_over_the_caps_is_refused_before_the_rest_of_it_is_sent(tmp_path) -> None:
    with serving(tmp_path, Limits(head_seconds=FAR)) as server:
        with _connect(server) as sock:  # a 64 KiB request line, its first 2 KiB sent
            sock.sendall(b"GET /" + b"a" * MAX_LINE)
            assert _status(sock) == 414
        with _connect(server) as sock:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nX-Pad: " + b"b" * MAX_HEAD)
            assert _status(sock) == 431
        with _connect(server) as sock:
            fields = b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_FIELDS + 1))
            sock.sendall(b"GET /v1/health HTTP/1.1\r\n" + fields + b"\r\n")
            assert _status(sock) == 431
        with _connect(server) as sock:  # all of it at once: the same, no more read into it
            sock.sendall(b"GET /" + b"a" * (64 << 10))
            assert _status(sock) == 414
        assert server.gate.stats["answered 414"] == 2
        assert server.gate.stats["answered 431"] == 2


def test_a_head_sent_a_byte_at_a_time_is_read_whole(tmp_path) -> None:
    with serving(tmp_path) as server:
        headers = auth.sign_request(KEY, "nodea", "GET", "/v1/health", b"")
        lines = ["GET /v1/health HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        with _connect(server) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for byte in ("\r\n".join(lines) + "\r\n\r\n").encode():
                sock.sendall(bytes([byte]))
            assert _status(sock) == 200


def test_a_flood_of_refused_requests_adds_kilobytes_to_the_log(tmp_path, capsys) -> None:
    rng = random.Random(21)
    garbage = [b"\x1b[2J\x00\x07\r" + rng.randbytes(64 << 10) for _ in range(4)]
    garbage[1] = b"GET /" + garbage[1].replace(b"\n", b"\x0b")  # (no line end: a 414)
    with serving(tmp_path) as server:
        for n in range(2000):
            with _connect(server) as sock, contextlib.suppress(OSError):
                sock.sendall(garbage[n % 4])
                _status(sock)  # (one after the other: each is read, and refused)
        answered = sum(v for k, v in server.gate.stats.items() if k.startswith("answered 4"))
        assert answered == 2000
        err = ""
        for _ in range(100):  # (what was left out is told once the rate allows: <= 2 s)
            err += capsys.readouterr().err
            if "not logged" in err:
                break
            time.sleep(0.1)
    assert "not logged" in err
    assert len(err.encode()) < 16 << 10  # kilobytes, where 2000 lines of 64 KiB were sent
    for line in err.splitlines():
        assert line.startswith("agent: ") and len(line) < LINE_CHARS + 64
        assert all(" " <= ch <= "~" for ch in line), line  # (escaped: no control byte)


def test_a_log_line_is_escaped_and_cut() -> None:
    assert escape("GET /\x1b[2J\x00 é\\") == "GET /\\x1b[2J\\x00 \\xe9\\\\"
    cut = escape("x" * 10_000)
    assert len(cut) < LINE_CHARS + 40 and cut.endswith("(10000 characters)")


@given(st.binary(max_size=MAX_HEAD + 64))
def test_any_bytes_are_a_head_or_a_refusal(data: bytes) -> None:
    try:
        whole = split(data)
        if whole is None:
            assert len(data) <= MAX_HEAD
            return
        head = parse(*whole)
    except HeadError as exc:
        assert exc.status in (400, 405, 414, 431, 505)
        return
    assert len(whole[0]) <= MAX_HEAD and head.rest == whole[1]
    assert head.method in METHODS and head.path.startswith("/")
    for name, value in head.headers.items():
        assert all(ch == "\t" or ch >= " " for ch in name + value) and "\x7f" not in value


_NAME = st.text("abcdefghijklmnopqrstuvwxyz-", max_size=20).map(lambda s: "X" + s)  # (unique)
_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)


@given(
    st.sampled_from(sorted(METHODS)),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=100),
    st.dictionaries(_NAME, _VALUE, max_size=MAX_FIELDS),
    st.binary(max_size=50),
)
def test_a_plain_head_is_read_as_it_was_sent(
    method: str, path: str, fields: dict[str, str], body: bytes
) -> None:
    text = f"{method} /{path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    whole = split(text.encode() + b"\r\n" + body)
    assert whole is not None
    head = parse(*whole)
    assert (head.method, head.path, head.rest) == (method, "/" + path, body)
    assert dict(head.headers.items()) == fields


# -- protocol ---------------------------------------------------------------------------------


def _signed_at(stamp: str) -> dict[str, str]:
    headers = auth.sign_request(KEY, "nodea", "GET", "/v1/health", b"")
    nonce, digest = headers[auth.NONCE], headers[auth.BODY]
    mac = auth._mac(KEY, "nodea", "GET", "/v1/health", stamp, nonce, digest)
    return {**headers, auth.TIME: stamp, "Authorization": f"{auth.SCHEME} {mac}"}


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_signed_time_that_is_not_finite_is_refused(tmp_path, stamp: str) -> None:
    with pytest.raises(auth.AuthError, match="finite"):
        auth.Verifier(KEY, "nodea").check("GET", "/v1/health", _signed_at(stamp))
    with serving(tmp_path) as server, _connect(server) as sock:
        lines = ["GET /v1/health HTTP/1.1", *(f"{k}: {v}" for k, v in _signed_at(stamp).items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while piece := sock.recv(4096):
            answer += piece
    assert answer.startswith(b"HTTP/1.0 403") and b"finite" in answer


def _chunked(data: bytes) -> Chunked:
    return Chunked(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]


def test_a_chunked_body_is_read_as_sent() -> None:
    body = _chunked(b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert body.read() == b"hello!"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"-5\r\nhello\r\n0\r\n\r\n", "not hex"),
        (b"0x5\r\nhello\r\n0\r\n\r\n", "not hex"),
        (b"+5\r\nhello\r\n0\r\n\r\n", "not hex"),
        (b"5_0\r\nhello\r\n0\r\n\r\n", "not hex"),
        (b"zz\r\n", "not hex"),
        (b"\r\n", "not hex"),
        (b"%x\r\n" % (MAX_CHUNK + 1), "of over"),
        (b"F" * 40 + b"\r\n", "of over"),
        (b"5\r\nhelloXX\r\n0\r\n\r\n", "longer than its size"),
        (b"5\r\nhel", "ended early"),
        (b"5", "ended"),
        (b"0\r\n" + b"X: 1\r\n" * (MAX_TRAILERS + 1) + b"\r\n", "trailer lines"),
    ],
)
def test_a_broken_chunked_body_is_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(TreeError, match=why):
        _chunked(data).read()


# -- peers that trickle -----------------------------------------------------------------------

# A 0.3 s floor, then 10 kB/s (a real transfer: 60 s, then 1 MiB/s); the peers here trickle
# a byte every 50 ms, and would take 10 s if nothing cut them off.
SLOW = Rate(floor=0.3, bytes_per_second=10_000)


Answer = Callable[[socket.socket, dict[str, str], threading.Event], object]


@contextlib.contextmanager
def _peer(answer: Answer, rcvbuf: int | None = None) -> Iterator[str]:
    """A fake agent on loopback: reads one request's head, then ``answer`` does the rest
    (until the event it is given is set, at the end of the ``with``); ``rcvbuf``: its
    receive buffer, small (what it does not read then soon stops the sender)."""
    listener = socket.socket()
    if rcvbuf is not None:  # (before the listen: the connection it accepts takes it)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(10)
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as conn:
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 1 << 16:
                data += conn.recv(4096) or b"\r\n\r\n"
            lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
            answer(conn, dict(line.split(": ", 1) for line in lines), stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        thread.join(20)


def _silent(conn: socket.socket, headers: dict[str, str], stop: threading.Event) -> None:
    stop.wait(10)  # (reads the head, never answers)


def _trickles(head: bytes, body: bytes = b"", signed: bool = False) -> Answer:
    """A byte every 50 ms of ``head`` (or, ``signed``: of ``body`` after a signed head);
    bounded: what trickles is short."""

    def answer(conn: socket.socket, headers: dict[str, str], stop: threading.Event) -> None:
        reply = auth.sign_reply(KEY, "nodea", headers[auth.NONCE], 200, None)
        conn.sendall(head.replace(b"REPLY", reply.encode()) if signed else b"")
        for byte in body if signed else head:
            if stop.is_set():
                return
            conn.sendall(bytes([byte]))
            stop.wait(0.05)
        stop.wait(10)

    return answer


HEAD_200 = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
SIGNED_200 = b"HTTP/1.0 200 OK\r\nX-Dockyard-Reply: REPLY\r\n\r\n"


@pytest.mark.parametrize(
    "use",
    [
        lambda c, tmp: c.call("GET", "health"),
        lambda c, tmp: c.fetch_into("a" * 64, tmp),
    ],
    ids=["call", "fetch"],
)
def test_a_peer_that_trickles_its_answer_is_cut_off(tmp_path, use) -> None:
    answer = _trickles(HEAD_200 * 4)  # (200 bytes: 10 s, if it were not cut off)
    with _peer(answer) as address, pytest.raises(AgentError, match="slower than"):
        use(AgentClient(address, KEY, "nodea", rate=SLOW), tmp_path)


def test_a_signed_stream_that_trickles_is_cut_off() -> None:
    answer = _trickles(SIGNED_200, b"\x00\x00\x01\x00" + b"x" * 200, signed=True)
    with _peer(answer) as address:
        client = AgentClient(address, KEY, "nodea", rate=SLOW)
        with (
            pytest.raises(OSError, match="slower than"),
            client.stream("volumes/send", {}) as inp,
        ):
            inp.read()


def test_a_peer_that_never_answers_a_transfer_is_cut_off(tmp_path) -> None:
    with _peer(_silent) as address:
        client = AgentClient(address, KEY, "nodea", rate=SLOW)
        with pytest.raises(AgentError, match="slower than"):
            client.call("POST", "objects/has", {"digests": []}, quick=True)
    with _peer(_silent) as address:
        client = AgentClient(address, KEY, "nodea", rate=SLOW)
        with pytest.raises(AgentError, match="slower than"):  # noqa: SIM117
            with client.stream("volumes/send", {}):
                pass
    with _peer(_silent, rcvbuf=4096) as address:  # (reads the head, never the body)
        client = AgentClient(address, KEY, "nodea", rate=Rate(0.3, 1 << 30))
        mib = b"x" * (1 << 20)  # 16 MiB: more than the socket buffers on the way hold
        with pytest.raises(AgentError, match="slower than"):
            client._put("a" * 64, lambda pipe: [pipe.write(mib) for _ in range(16)], ROOMY)


def test_a_tree_sent_waits_for_its_answer_as_long_as_the_caller_lets_it(tmp_path) -> None:
    """Once the tree is sent, the agent builds and seals it before it answers: that is
    work, not a trickle (the pace no longer applies); the caller's timeout does."""

    def reads_all(conn: socket.socket, headers: dict[str, str], stop: threading.Event) -> None:
        data = b""
        while not data.endswith(b"0\r\n\r\n") and (piece := conn.recv(4096)):
            data += piece
        stop.wait(10)  # (never answers)

    (tmp_path / "lone").write_bytes(b"x" * 1000)
    fd = os.open(tmp_path / "lone", os.O_RDONLY)
    try:
        with _peer(reads_all) as address:
            client = AgentClient(address, KEY, "nodea", timeout=1.0, rate=SLOW)
            with pytest.raises(AgentError, match="timed out"):
                client.put_lone_file("a" * 64, fd)
    finally:
        os.close(fd)


def test_an_answer_larger_than_any_is_not_read_whole(monkeypatch) -> None:
    from dockyard.agent import client as client_module

    monkeypatch.setattr(client_module, "MAX_ANSWER", 1000)
    big = json.dumps({"x": "y" * 5000}).encode()
    head = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
    with (
        _peer(lambda conn, headers, stop: conn.sendall(head + big)) as address,
        pytest.raises(AgentError, match="larger than 1000"),
    ):
        AgentClient(address, KEY, "nodea").health()
