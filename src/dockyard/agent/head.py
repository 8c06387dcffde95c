"""A request's head (request line and header lines) as the agent takes it: read under
small caps before anything else is done with the connection, parsed strictly. dockyard's
clients send short, plain heads; anything else is refused, cheaply, with a status that
says why (400, 405, 414, 431, 505).
"""

from __future__ import annotations

import http
import http.client
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dockyard.errors import AgentFailure

MAX_LINE = 2048  # the request line (414 over it): the agent's paths are under 200 bytes
MAX_HEAD = 8192  # request line and headers (431 over it): a signed head is ~600 bytes
MAX_FIELDS = 32  # header lines (431 over it): dockyard's client sends about 9
METHODS = frozenset({"GET", "POST", "PUT"})

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # (visible ASCII: no space, no control byte)
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # (no control byte but a tab)
_VERSION = re.compile(rb"HTTP/1\.[01]")
_NUMBER = re.compile(rb"[0-9]{1,18}")


class HeadError(AgentFailure):
    """A head that is refused: its status and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    version: str
    line: str  # the request line (for the log)
    headers: http.client.HTTPMessage
    rest: bytes  # what came after the head: the start of the body


def split(data: bytes) -> tuple[bytes, bytes] | None:
    """The head in ``data`` and what follows it; None while more may come; HeadError once
    ``data`` is over a cap without a whole head."""
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
    if not ends:
        if len(data) > MAX_LINE and data.find(b"\n", 0, MAX_LINE + 1) < 0:
            raise HeadError(414, f"a request line longer than {MAX_LINE} bytes")
        if len(data) > MAX_HEAD:
            raise HeadError(431, f"a request head larger than {MAX_HEAD} bytes")
        return None
    end = min(ends)
    end += 2 if data[end + 1 : end + 2] == b"\n" else 3
    if end > MAX_HEAD:
        raise HeadError(431, f"a request head larger than {MAX_HEAD} bytes")
    return data[:end], data[end:]


def parse(head: bytes, rest: bytes = b"") -> Head:
    """The head ``head`` (as :func:`split` gives it), checked; HeadError if it is not one."""
    lines = [line.removesuffix(b"\r") for line in head.split(b"\n")[:-2]]
    if not lines:
        raise HeadError(400, "an empty request line")
    line = lines[0]
    if len(line) > MAX_LINE:
        raise HeadError(414, f"a request line longer than {MAX_LINE} bytes")
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HeadError(400, "not an HTTP request line")
    method, target, version = parts
    if not _VERSION.fullmatch(version):
        status = 505 if version.startswith(b"HTTP/") else 400
        raise HeadError(status, "not HTTP/1.0 or HTTP/1.1")
    if method.decode() not in METHODS:
        raise HeadError(405, "the agent answers GET, POST and PUT only")
    if not _TARGET.fullmatch(target):
        raise HeadError(400, "a request path that is not a plain absolute path")
    if len(lines) - 1 > MAX_FIELDS:
        raise HeadError(431, f"more than {MAX_FIELDS} header lines")
    headers = http.client.HTTPMessage()
    seen: set[bytes] = set()
    for field in lines[1:]:
        name, colon, value = field.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HeadError(400, "a header line that is not NAME: VALUE")
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            raise HeadError(400, "a control byte in a header")
        if name.lower() in seen:  # (two lengths, two signatures: never guess which counts)
            raise HeadError(400, "a header given twice")
        seen.add(name.lower())
        headers[name.decode("ascii")] = value.decode("latin-1")
    _check_body_headers(headers)
    text = line.decode("ascii")
    return Head(method.decode(), target.decode(), version.decode(), text, headers, rest)


def _check_body_headers(headers: http.client.HTTPMessage) -> None:
    length, coding = headers.get("Content-Length"), headers.get("Transfer-Encoding")
    if length is not None and coding is not None:
        raise HeadError(400, "both Content-Length and Transfer-Encoding")
    if length is not None and not _NUMBER.fullmatch(length.encode("latin-1")):
        raise HeadError(400, "Content-Length is not a number")
    if coding is not None and coding.lower() != "chunked":
        raise HeadError(400, "a Transfer-Encoding other than chunked")


def answer(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole JSON answer, head and body, to be sent as it is (then the connection ends)."""
    lines = [
        f"HTTP/1.0 {status} {http.HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


__all__ = ["MAX_FIELDS", "MAX_HEAD", "MAX_LINE", "Head", "HeadError", "answer", "parse", "split"]
