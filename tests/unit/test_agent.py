"""The node agent on loopback: real HTTP, real files, two agents that share a disk the way
the local test cluster's nodes do (each under its own node folder)."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.agent import auth
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.server import AgentServer, NodeStore
from dockyard.agent.tree_wire import MAGIC, PIECE
from dockyard.agent.trees import Bounds
from dockyard.backends.swarm.agent_image import agent_sources
from dockyard.disk import sealing

KEY = bytes(range(32))


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[AgentClient, AgentClient, Path]]:
    root = tmp_path / "agents"
    servers = [
        AgentServer(("127.0.0.1", 0), NodeStore(node, str(root), str(root), KEY))
        for node in ("nodea", "nodeb")
    ]
    threads = [threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    clients = [AgentClient(f"127.0.0.1:{s.server_address[1]}", KEY, s.store.node) for s in servers]
    yield clients[0], clients[1], root
    for server in servers:
        server.shutdown()
        server.server_close()


STAGING = {"project": "proj1", "run": "run1", "name": "align_sample_a_-0a1b2c3d.1"}


def _write_output(path: Path) -> None:
    (path / "sub").mkdir()
    (path / "sub" / "data.txt").write_text("hello\n")
    (path / "tool.sh").write_text("#!/bin/sh\n")
    (path / "tool.sh").chmod(0o755)
    os.symlink("/etc/passwd", path / "link")
    os.mkfifo(path / "pipe")


def test_an_output_is_made_sealed_committed_and_fetched_by_another_node(agents) -> None:
    a, b, root = agents
    made = Path(a.call("POST", "staging/make", STAGING)["path"])
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o777
    assert made.is_relative_to(root / "nodea" / "projects" / "proj1" / "work" / "run1")
    _write_output(made)
    sealed = a.call("POST", "staging/commit", STAGING)
    assert any("FIFO" in change for change in sealed["changes"])
    digest = sealed["digest"]
    kept = Path(sealed["path"])
    assert kept == root / "nodea" / "outputs" / digest and not made.exists()
    assert sealing.tree_digest(kept)[0] == digest
    assert a.call("POST", "objects/has", {"digests": [digest]})["present"] == [digest]
    assert b.call("POST", "objects/has", {"digests": [digest]})["present"] == []

    source = {"digest": digest, "source": a.address, "source_node": "nodea"}
    copied = Path(b.call("POST", "objects/fetch", source)["path"])
    assert copied == root / "nodeb" / "outputs" / digest
    assert sealing.tree_digest(copied)[0] == digest
    assert os.readlink(copied / "link") == "/etc/passwd"  # a link stays a link
    assert (copied / "tool.sh").stat().st_mode & 0o777 == 0o555
    assert (copied / "sub" / "data.txt").stat().st_mode & 0o777 == 0o444
    assert not list((root / "nodeb" / "outputs" / ".incoming").iterdir())


def test_a_discarded_staging_is_gone(agents) -> None:
    a, _, _ = agents
    made = Path(a.call("POST", "staging/make", STAGING)["path"])
    (made / "x").write_text("x")
    a.call("POST", "staging/discard", STAGING)
    assert not made.exists()
    a.call("POST", "staging/discard", STAGING)  # again: nothing to do


def test_inputs_are_sent_as_trees_and_checked_against_their_digest(agents, tmp_path) -> None:
    a, _, root = agents
    folder = tmp_path / "reads"
    folder.mkdir()
    (folder / "r1.fq").write_text("@r1\nACGT\n")
    digest = sealing.tree_digest(folder)[0]
    assert Path(a.put_tree(digest, folder)["path"]) == root / "nodea" / "outputs" / digest
    assert (root / "nodea" / "outputs" / digest / "r1.fq").read_text() == "@r1\nACGT\n"

    lone = tmp_path / "ref.fa"
    lone.write_text(">chr1\nACGT\n")
    fd = os.open(lone, os.O_RDONLY)
    try:
        lone_digest = sealing.lone_file_digest(fd)
        path = Path(a.put_lone_file(lone_digest, fd)["path"])
    finally:
        os.close(fd)
    assert (path / sealing.LONE_FILE).read_text() == ">chr1\nACGT\n"

    with pytest.raises(AgentError) as caught:
        a.put_tree("f" * 64, folder)  # not what the tree is
    assert caught.value.status == 400
    assert not (root / "nodea" / "outputs" / ("f" * 64)).exists()
    assert not list((root / "nodea" / "outputs" / ".incoming").iterdir())


def _name(name: str) -> bytes:
    raw = name.encode()
    return bytes([len(raw)]) + raw


def _file(name: str, data: bytes = b"") -> bytes:
    pieces = b"".join(
        b"P"
        + at.to_bytes(8, "big")
        + len(data[at : at + PIECE]).to_bytes(4, "big")
        + data[at : at + PIECE]
        for at in range(0, len(data), PIECE)
    )
    return b"F\x01\xa4" + _name(name) + len(data).to_bytes(8, "big") + pieces  # (0o644)


def _stream(*records: bytes) -> bytes:
    """A tree stream of raw records (dockyard.agent.tree_wire), however hostile."""
    root_mode = (0o755).to_bytes(2, "big")
    return MAGIC + root_mode + b"".join(records) + b"E" + len(records).to_bytes(8, "big")


ROOMY = Bounds(size=1 << 30, data=1 << 30, files=100, entries=100)


@pytest.mark.parametrize(
    "records",
    [
        [_file("../escape", b"x")],
        [_file("/abs", b"x")],
        [_file(".", b"x")],
        [
            b"L" + _name("l") + (4).to_bytes(2, "big") + b"/tmp",
            b"D\x01\xed" + _name("l"),
            _file("x"),
        ],
        [b"H" + _name("h")],  # (a hard link: no such record)
        [b"C" + _name("dev")],
        [_file("same", b"1"), _file("same", b"2")],
        [b"U", _file("up")],
        [_file("short", b"x" * 10)[:-23] + b"P" + (100).to_bytes(8, "big") + b"\0\0\0\1x"],
    ],
    ids=["dotdot", "absolute", "dot", "through-link", "hardlink", "device", "twice", "up", "past"],
)
def test_a_hostile_stream_is_refused_and_leaves_nothing(agents, tmp_path, records) -> None:
    a, _, root = agents
    data = _stream(*records)
    with pytest.raises(AgentError) as caught:
        a._put("a" * 64, lambda pipe: pipe.write(data), ROOMY)
    assert caught.value.status == 400
    incoming = root / "nodea" / "outputs" / ".incoming"
    assert not list(incoming.iterdir())
    assert not (root / "nodea" / "escape").exists() and not Path("/abs").exists()


def test_names_that_would_leave_the_node_folder_are_refused(agents) -> None:
    a, _, _ = agents
    for bad in (
        {**STAGING, "run": ".."},
        {**STAGING, "project": "../x"},
        {**STAGING, "run": ""},
        {**STAGING, "name": "a/b"},
        {**STAGING, "name": None},
    ):
        with pytest.raises(AgentError) as caught:
            a.call("POST", "staging/make", bad)
        assert caught.value.status == 400
    with pytest.raises(AgentError):
        a.call("POST", "objects/has", {"digests": ["../../etc"]})


def test_streams_are_fifos_in_the_run_folder(agents) -> None:
    a, _, root = agents
    body = {**STAGING, "name": "last.1", "producers": ["first", "second"]}
    folder = Path(a.call("POST", "streams/make", body)["path"])
    assert folder.is_relative_to(root / "nodea" / "projects" / "proj1" / "work" / "run1")
    assert sorted(p.name for p in folder.iterdir()) == ["first.fifo", "second.fifo"]
    a.call("POST", "work/clear", {"project": "proj1"})
    assert not folder.exists()


def test_a_request_not_signed_with_the_cluster_key_is_refused(agents) -> None:
    a, _, _ = agents
    stranger = AgentClient(a.address, bytes(32), "nodea")
    with pytest.raises(AgentError) as caught:
        stranger.health()
    assert "cluster key" in str(caught.value)

    host, port = a.address.split(":")
    for headers in ({}, {"Authorization": "dockyard-hmac 00"}):
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("GET", "/v1/health", headers=headers)
        assert conn.getresponse().status == 403
        conn.close()


def _raw(address: str, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.request(method, path, body=body or None, headers=headers)
    response = conn.getresponse()
    status, data = response.status, response.read()
    conn.close()
    return status, data


def test_a_replayed_stale_or_altered_request_is_refused(agents, monkeypatch) -> None:
    a, _, _ = agents
    body = b'{"project": "proj1"}'
    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    assert _raw(a.address, "POST", "/v1/work/clear", headers, body)[0] == 200
    status, data = _raw(a.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403 and b"replay" in data

    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    status, data = _raw(a.address, "POST", "/v1/work/clear", headers, b'{"project": "other"}')
    assert status == 403 and b"body" in data

    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    headers[auth.TIME] = f"{float(headers[auth.TIME]) - 3600:.3f}"
    status, _ = _raw(a.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403  # (the time is signed too: changing it breaks the signature)

    monkeypatch.setattr(auth.time, "time", lambda: 1000.0)  # a client whose clock is far off
    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    monkeypatch.undo()
    status, data = _raw(a.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403 and b"clock" in data

    headers = auth.sign_request(KEY, "nodea", "PUT", "/v1/objects/" + "a" * 64, None)
    headers["Content-Type"] = "application/json"
    status, _ = _raw(a.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403  # signed for another call

    _, b, _ = agents
    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    status, data = _raw(b.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403 and b"for this node" in data  # signed for another node

    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", body)
    headers["Authorization"] = "dockyard-hmac " + "é" * 64
    status, _ = _raw(a.address, "POST", "/v1/work/clear", headers, body)
    assert status == 403  # (not a crash)


def test_an_answer_not_signed_by_the_agent_is_not_believed() -> None:
    good = auth.sign_reply(KEY, "nodea", "n1", 200, b"{}")
    auth.check_reply(KEY, "nodea", "n1", 200, b"{}", {auth.REPLY: good})
    for node, nonce, status, body in (
        ("nodea", "n2", 200, b"{}"),
        ("nodea", "n1", 500, b"{}"),
        ("nodea", "n1", 200, b"[]"),
        ("nodeb", "n1", 200, b"{}"),  # another node's answer
    ):
        with pytest.raises(auth.AuthError):
            auth.check_reply(KEY, node, nonce, status, body, {auth.REPLY: good})
    for header in ({}, {auth.REPLY: "é" * 64}):  # (any text in a header is just wrong)
        with pytest.raises(auth.AuthError):
            auth.check_reply(KEY, "nodea", "n1", 200, b"{}", header)


def test_the_agent_needs_only_the_standard_library(tmp_path) -> None:
    """What the agent's image holds of dockyard (the package as it is: its base modules,
    the node-disk layer and the agent) imports nothing else of dockyard."""
    package = tmp_path / "dockyard"
    for rel, data in agent_sources().items():
        target = package / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    modules = sorted(
        ("dockyard/" + rel).removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for rel in agent_sources()
        if not rel.endswith("__main__.py")
    )
    code = (
        f"import sys, importlib; sys.path.insert(0, {str(tmp_path)!r})\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "loaded = [m.__file__ for n, m in sys.modules.items() if n.startswith('dockyard')]\n"
        "assert all(f.startswith(sys.path[0]) for f in loaded), loaded"
    )
    # (the image's Python has pydantic beside the standard library: site-packages stay)
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "dockyard.agent.server" in modules and "dockyard.disk.sealing" in modules


def test_a_discard_beside_a_commit_never_leaves_a_broken_output(agents) -> None:
    """The loop may discard a staging whose commit it gave up on: the two take turns, and
    whatever is kept under a digest is that digest's tree."""
    a, _, root = agents
    for turn in range(3):
        body = {**STAGING, "name": f"race.{turn}"}
        made = Path(a.call("POST", "staging/make", body)["path"])
        for n in range(400):
            (made / f"f{n}").write_text(str(n))

        def commit(body: dict[str, object] = body) -> None:
            with contextlib.suppress(AgentError):  # (gone already: the discard came first)
                a.call("POST", "staging/commit", body)

        committing = threading.Thread(target=commit)
        committing.start()
        a.call("POST", "staging/discard", body)
        committing.join(timeout=60)
    outputs = root / "nodea" / "outputs"
    for kept in outputs.iterdir() if outputs.is_dir() else ():  # (none: discards came first)
        if kept.name != ".incoming":
            assert sealing.tree_digest(kept)[0] == kept.name


def test_a_big_tree_refused_at_its_start_gets_the_refusal_not_a_broken_pipe(agents) -> None:
    a, _, _ = agents
    data = _stream(_file("../escape", b"x"), _file("big", b"0" * (3 << 20)))
    with pytest.raises(AgentError) as caught:
        a._put("a" * 64, lambda pipe: pipe.write(data), ROOMY)
    assert caught.value.status == 400 and "escape" in str(caught.value)


def test_a_restarted_agent_still_refuses_a_replay(tmp_path: Path) -> None:
    journal = tmp_path / ".nonces"
    headers = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", b"{}")
    first = auth.Verifier(KEY, "nodea", journal)
    first.check("POST", "/v1/work/clear", headers)
    assert first.flush()  # (the journal is written by a thread of its own)
    restarted = auth.Verifier(KEY, "nodea", journal)
    with pytest.raises(auth.AuthError, match="replay"):
        restarted.check("POST", "/v1/work/clear", headers)
    fresh = auth.sign_request(KEY, "nodea", "POST", "/v1/work/clear", b"{}")
    restarted.check("POST", "/v1/work/clear", fresh)  # (a new request is fine)
