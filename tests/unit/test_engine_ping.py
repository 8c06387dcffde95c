"""Asking whether the engine answers *now*: a new connection each time (issue 15)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from dockyard.backends.local.runtime import ping_socket


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_one() -> None:
        with listener, listener.accept()[0] as conn:
            conn.recv(1024)
            conn.sendall(answer)

    thread = threading.Thread(target=answer_one)
    thread.start()
    return thread


def test_an_engine_that_answers_200_is_up(tmp_path: Path) -> None:
    thread = serve_once(tmp_path / "sock", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    ping_socket(str(tmp_path / "sock"))
    thread.join(timeout=5)


def test_an_engine_that_answers_an_error_is_not_up(tmp_path: Path) -> None:
    thread = serve_once(tmp_path / "sock", b"HTTP/1.0 503 Service Unavailable\r\n\r\n")
    with pytest.raises(OSError, match="503"):
        ping_socket(str(tmp_path / "sock"))
    thread.join(timeout=5)


def test_a_socket_left_by_a_killed_engine_refuses(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "sock"))
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    with pytest.raises(ConnectionRefusedError):
        ping_socket(str(tmp_path / "sock"))


def test_a_missing_socket_is_not_up(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ping_socket(str(tmp_path / "sock"))
