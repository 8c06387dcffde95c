"""Talking to a node agent: signed requests, checked answers, trees in and out.

A call waits as long as the agent works on it (sealing or fetching a large tree takes what
it takes), unless the caller gives a timeout; a peer that vanished (a node cut off) is
found by TCP keepalives within about :data:`DEAD_PEER_SECONDS`. What moves once the answer
began, and every tree or stream sent or fetched, keeps a minimum pace (:mod:`.pace`): a
peer that trickles is cut off. An answer is read only up to :data:`MAX_ANSWER` bytes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from dockyard.agent import API, auth
from dockyard.agent.frames import FrameReader
from dockyard.agent.pace import Pace, PacedSocket, Rate, TooSlow
from dockyard.agent.trees import (
    Bounds,
    TreeError,
    Writable,
    receive_tree,
    write_lone_file,
    write_tree,
)
from dockyard.disk import sealing
from dockyard.errors import AgentFailure

CONNECT_TIMEOUT = 10.0
UNACKED_MS = 60_000  # data sent and not acknowledged for this long: the peer is gone
PIPE_CHUNK = 1 << 20
KEEPALIVE = (10, 5, 4)  # idle seconds, seconds between probes, probes
DEAD_PEER_SECONDS = KEEPALIVE[0] + KEEPALIVE[1] * KEEPALIVE[2]
MAX_ANSWER = 16 << 20  # a JSON answer (read before its signature is checked: bounded)


class AgentError(AgentFailure):
    """The agent could not be reached, refused, or answered what it should not have."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind  # what kind of refusal the agent said it was, if it said


class _Connection(http.client.HTTPConnection):
    """Connects within CONNECT_TIMEOUT, then reads with ``read_timeout`` (None: as long as
    the peer is alive, which keepalives tell) and keeps to ``pace``."""

    def __init__(self, host: str, port: int, read_timeout: float | None, pace: Pace):
        connect = CONNECT_TIMEOUT if read_timeout is None else min(CONNECT_TIMEOUT, read_timeout)
        super().__init__(host, port, timeout=connect)
        self.read_timeout = read_timeout
        self.pace = pace

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        idle, interval, count = KEEPALIVE
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKED_MS)
        self.sock.settimeout(self.read_timeout)
        self.sock = cast(socket.socket, PacedSocket(self.sock, self.pace, self.read_timeout))


class AgentClient:
    def __init__(
        self,
        address: str,
        key: bytes,
        node: str,
        timeout: float | None = None,
        rate: Rate | None = None,
    ):
        self.address = address  # host:port
        self.key = key
        self.node = node  # whose agent it is: requests are signed for it alone
        self.timeout = timeout
        self.rate = rate or Rate()  # the pace of what moves (:mod:`.pace`)

    def __repr__(self) -> str:
        return f"AgentClient({self.address!r}, node {self.node!r})"

    # -- calls ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.call("GET", "health")

    def call(
        self, method: str, route: str, body: dict[str, Any] | None = None, quick: bool = False
    ) -> dict[str, Any]:
        """``quick``: the agent answers at once (no long work), so the pace applies from the
        request on; else the answer may take as long as the work (the pace from its start)."""
        data = json.dumps(body).encode() if body is not None else b""
        conn, response, nonce = self._request(method, f"{API}/{route}", data, works=not quick)
        try:
            raw = _answer(response)
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            conn.close()
        return self._checked(response, nonce, raw)

    def put_tree(self, digest: str, source: Path, bounds: Bounds | None = None) -> dict[str, Any]:
        """Send the folder ``source`` to be kept as ``digest`` (checked there); ``bounds``:
        what it holds (counted here when not given)."""
        bounds = bounds or Bounds.of(sealing.tree_tally(source))
        return self._put(digest, lambda pipe: write_tree(source, pipe), bounds)

    def put_lone_file(self, digest: str, fd: int) -> dict[str, Any]:
        """Send the open file ``fd`` to be kept as a tree that holds it alone."""
        size = os.fstat(fd).st_size
        return self._put(digest, lambda pipe: write_lone_file(fd, pipe), Bounds(size, size, 1, 1))

    def fetch_into(self, digest: str, store: Path) -> Path:
        """Get the tree ``digest`` and keep it in ``store`` once it checks out: within what
        the seal of it that this agent keeps counted (asked first, in a signed answer)."""
        answer = self.call("POST", "objects/has", {"digests": [digest]}, quick=True)
        record = (answer.get("records") or {}).get(digest)
        if record is None:
            kept = digest in (answer.get("present") or [])
            why = "no record of what it holds (an older agent kept it)" if kept else "no such tree"
            raise AgentError(f"agent {self.address}: tree {digest[:12]}: {why}")
        try:
            bounds = Bounds.parse(record)
        except TreeError as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        path = f"{API}/objects/{digest}"
        conn, response, nonce = self._request("GET", path, b"", entries=bounds.entries)
        try:
            if response.status != 200:
                self._checked(response, nonce, _answer(response))
            auth.check_reply(self.key, self.node, nonce, 200, None, response.headers)
            return receive_tree(response, digest, store, bounds)
        except (auth.AuthError, TreeError, OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def stream(self, route: str, body: dict[str, Any]) -> Iterator[FrameReader]:
        """A call whose answer is a byte stream, signed as a whole (:mod:`.frames`): the
        reader's end comes only once the signature checked out."""
        conn, response, nonce = self._request("POST", f"{API}/{route}", json.dumps(body).encode())
        try:
            if response.status != 200:
                try:
                    raw = _answer(response)
                except (OSError, http.client.HTTPException) as exc:
                    raise AgentError(f"agent {self.address}: {exc}") from None
                self._checked(response, nonce, raw)
            try:
                auth.check_reply(self.key, self.node, nonce, 200, None, response.headers)
            except auth.AuthError as exc:
                raise AgentError(f"agent {self.address}: {exc}") from None
            yield FrameReader(response, self.key, nonce)
        finally:
            conn.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, data: bytes, works: bool = False, entries: int = 0
    ) -> tuple[_Connection, http.client.HTTPResponse, str]:
        """Send one signed request (a JSON body, or none); its connection (for the caller
        to close), the answer's head, and the request's nonce. ``works``: the agent works
        before it answers (a call), for as long as that takes; else it answers at once (a
        tree, a stream), which keeps the pace from the request on (``entries``: the tree's,
        which the pace allows for)."""
        headers = auth.sign_request(self.key, self.node, method, path, data)
        if data:
            headers["Content-Type"] = "application/json"
        conn = self._connection(entries)
        try:
            conn.pace.start()
            conn.request(method, path, body=data or None, headers=headers)
            if works:
                conn.pace.await_answer()
            return conn, conn.getresponse(), headers[auth.NONCE]
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise AgentError(f"agent {self.address}: {exc}") from None

    def _connection(self, entries: int = 0) -> _Connection:
        host, _, port = self.address.rpartition(":")
        pace = Pace(self.rate)
        pace.entries(entries)
        return _Connection(host.strip("[]"), int(port), self.timeout, pace)

    def _put(
        self, digest: str, write: Callable[[Writable], None], bounds: Bounds
    ) -> dict[str, Any]:
        path = f"{API}/objects/{digest}?{bounds.query()}"  # (signed: the bounds are too)
        headers = auth.sign_request(self.key, self.node, "PUT", path, None)
        headers["Content-Type"] = "application/octet-stream"
        headers["Transfer-Encoding"] = "chunked"
        conn = self._connection(bounds.entries)
        reader, writer = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(writer, "wb") as pipe:
                    write(pipe)
            except BrokenPipeError:
                pass  # the agent stopped reading: its answer says why
            except BaseException as exc:  # (handed to the caller below)
                failure.append(exc)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        try:
            with os.fdopen(reader, "rb") as pipe:
                conn.connect()  # (a node that does not answer is that, not a refusal)
                conn.pace.start()  # (the tree, as it goes)
                try:
                    conn.request(
                        "PUT", path, body=_chunks(pipe), headers=headers, encode_chunked=True
                    )
                except TooSlow:
                    raise
                except OSError:
                    pass  # refused half-way, the agent answers and stops reading: see why
                else:  # sent: the agent builds and seals it before it answers, however long
                    conn.pace.await_answer()
                response = conn.getresponse()
                raw = _answer(response)
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"agent {self.address}: {exc}") from None
        finally:
            producer.join()
            conn.close()
        if failure:
            raise AgentError(f"sending {digest[:12]}: {failure[0]}")
        return self._checked(response, headers[auth.NONCE], raw)

    def _checked(
        self, response: http.client.HTTPResponse, nonce: str, raw: bytes
    ) -> dict[str, Any]:
        try:
            auth.check_reply(self.key, self.node, nonce, response.status, raw, response.headers)
        except auth.AuthError as exc:
            detail = raw[:200].decode(errors="replace") if response.status == 403 else ""
            raise AgentError(f"agent {self.address}: {exc} {detail}".strip()) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise AgentError(f"agent {self.address}: an answer that is not JSON") from None
        if response.status != 200:
            message = answer.get("error") if isinstance(answer, dict) else None
            kind = answer.get("kind") if isinstance(answer, dict) else None
            raise AgentError(
                f"agent {self.address}: {message or response.reason}",
                response.status,
                kind if isinstance(kind, str) else None,
            )
        if not isinstance(answer, dict):
            raise AgentError(f"agent {self.address}: an answer that is not a JSON object")
        return answer


def _answer(response: http.client.HTTPResponse) -> bytes:
    raw = response.read(MAX_ANSWER + 1)
    if len(raw) > MAX_ANSWER:
        raise http.client.HTTPException(f"an answer larger than {MAX_ANSWER} bytes")
    return raw


def _chunks(pipe: Any) -> Iterator[bytes]:
    while chunk := pipe.read(PIPE_CHUNK):
        yield chunk
