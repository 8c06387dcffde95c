"""Requests and answers between dockyard and its node agents, signed with the cluster key.

A request carries the time, a fresh nonce and the SHA-256 of its body, and an HMAC-SHA256
of those with the node it is for, its method and its path; an agent refuses one that is not
signed with its key for its own node, is more than :data:`MAX_SKEW` seconds from its own
clock, or repeats a nonce it has seen (a replay; the nonces are also kept on the node's
disk, as far as it lets them be written, so a restarted agent knows them still). A body
streamed in (a tree) is marked :data:`STREAMED` instead of hashed: the tree is checked
against the digest it is sent under before it is kept. Every answer is signed over the
node, the request's nonce, its status and its body's hash, so that a client never acts on
an answer that its agent did not give.

Authenticated, not encrypted: whoever can watch the network between the nodes can read the
trees that cross it (as with Swarm's overlay networks unless they are created encrypted).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockyard.agent import nonces
from dockyard.agent.quietlog import to_stderr
from dockyard.errors import AgentFailure

MAX_SKEW = 120.0  # seconds between the clocks of a client and an agent
STREAMED = "streamed"
SCHEME = "dockyard-hmac"
KEY_BYTES = 32

TIME = "X-Dockyard-Time"
NONCE = "X-Dockyard-Nonce"
BODY = "X-Dockyard-Body"
REPLY = "X-Dockyard-Reply"


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


class AuthError(AgentFailure):
    """A request or answer that is not what the cluster key signed."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return key.hex()


def read_key(path: Path | str) -> bytes:
    """The key in ``path`` (hex text); refused when it is too short to be one."""
    text = Path(path).read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuthError(f"{path}: not a dockyard cluster key") from None
    if len(key) < KEY_BYTES:
        raise AuthError(f"{path}: a cluster key has {KEY_BYTES} bytes, this one {len(key)}")
    return key


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _mac(key: bytes, *parts: str) -> str:
    text = "\n".join(parts).encode("utf-8", "surrogateescape")
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """A constant-time comparison that any header's text may take part in."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def sign_request(
    key: bytes, node: str, method: str, path: str, body: bytes | None
) -> dict[str, str]:
    """The headers that authenticate a request to ``node``'s agent; ``body`` None: a
    streamed body."""
    stamp = f"{time.time():.3f}"
    nonce = secrets.token_hex(16)
    digest = STREAMED if body is None else body_hash(body)
    mac = _mac(key, node, method, path, stamp, nonce, digest)
    return {TIME: stamp, NONCE: nonce, BODY: digest, "Authorization": f"{SCHEME} {mac}"}


def sign_reply(key: bytes, node: str, nonce: str, status: int, body: bytes | None) -> str:
    digest = STREAMED if body is None else body_hash(body)
    return _mac(key, "reply", node, nonce, str(status), digest)


def check_reply(
    key: bytes, node: str, nonce: str, status: int, body: bytes | None, headers: Headers
) -> None:
    given = headers.get(REPLY) or ""
    if not same(given, sign_reply(key, node, nonce, status, body)):
        raise AuthError("the answer is not signed with the cluster key by the node asked")


@dataclass(frozen=True)
class Checked:
    nonce: str
    streamed: bool  # the body is not covered by the signature: verify it by its digest


class Verifier:
    """An agent's side: checks requests for its ``node``, and remembers the nonces it has
    seen for as long as a request with them could still be in time, in ``journal`` too
    (when given: written best-effort by a thread of its own, :mod:`.nonces`) so that a
    restarted agent still knows them. ``log``: where trouble with the journal is told
    (the agent's server sets its own log)."""

    def __init__(
        self,
        key: bytes,
        node: str,
        journal: Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.key = key
        self.node = node
        self.clock = clock
        self.log: Callable[[str], None] = to_stderr
        self._seen: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()  # (oldest first: forgotten from there)
        self._lock = threading.Lock()
        self.journal: nonces.Journal | None = None
        if journal is not None:
            self.journal = nonces.Journal(journal, 2 * MAX_SKEW, clock, lambda t: self.log(t))
            for nonce, at in self.journal.load():
                self._seen[nonce] = at
                self._order.append((at, nonce))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait for the nonces seen to be in the journal (or to have failed to be)."""
        return self.journal is None or self.journal.flush(timeout)

    def check(self, method: str, path: str, headers: Headers) -> Checked:
        scheme, _, mac = (headers.get("Authorization") or "").partition(" ")
        stamp, nonce, digest = (headers.get(h) or "" for h in (TIME, NONCE, BODY))
        if scheme != SCHEME or not (mac and stamp and nonce and digest):
            raise AuthError("the request is not signed")
        expected = _mac(self.key, self.node, method, path, stamp, nonce, digest)
        if not same(mac, expected):
            raise AuthError("the request is not signed with the cluster key for this node")
        try:
            sent = float(stamp)
        except ValueError:
            raise AuthError("the request's time is not a number") from None
        if not math.isfinite(sent):  # (nan is never "too far off": it would never expire)
            raise AuthError("the request's time is not a finite number")
        now = self.clock()
        if abs(now - sent) > MAX_SKEW:
            raise AuthError(f"the request's time is {now - sent:+.0f} s from this node's clock")
        if len(nonce) > 64:
            raise AuthError("the request's nonce is too long")
        with self._lock:
            self._forget(now - 2 * MAX_SKEW)
            if nonce in self._seen:
                raise AuthError("the request was seen before (a replay)")
            self._seen[nonce] = now
            self._order.append((now, nonce))
        if self.journal is not None:
            self.journal.add(nonce, now)  # (never waits on the disk)
        return Checked(nonce, digest == STREAMED)

    def _forget(self, horizon: float) -> None:
        """Forget the nonces seen before ``horizon``: they come first (a request's cost
        is what it forgets, not what is remembered)."""
        while self._order and self._order[0][0] < horizon:
            at, nonce = self._order.popleft()
            if self._seen.get(nonce) == at:
                del self._seen[nonce]

    def body_matches(self, checked: Checked, headers: Headers, body: bytes) -> bool:
        return checked.streamed or same(headers.get(BODY) or "", body_hash(body))


def write_key(path: Path, key: bytes) -> None:
    """Keep ``key`` in ``path``, readable by its owner only, made whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(encode_key(key) + "\n")
    os.rename(scratch, path)
