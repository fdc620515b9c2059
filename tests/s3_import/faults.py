"""A TCP proxy in front of the real S3 server that injects network faults on demand: refused connections
(nothing listens), and object downloads cut off mid-stream. Requests and answers are otherwise the real
server's, byte for byte (so request signatures stay valid)."""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from urllib.parse import urlparse

from inflow.local.process import free_port

UP = "up"
CUT = "cut"  # object GETs: the headers and the first ``cut_after`` body bytes, then the connection closes


class FaultyProxy:
    def __init__(self, upstream: str, cut_after: int = 64) -> None:
        url = urlparse(upstream)
        self.upstream = (url.hostname or "127.0.0.1", url.port or 80)
        self.port = free_port()
        self.cut_after = cut_after
        self.mode = UP
        self.cut_requests: list[str] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen on the port (before this, connections to it are refused: S3 is unreachable)."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(32)
        self._server = server
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            with suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None

    def _accept(self) -> None:
        server = self._server
        while server is not None:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """One request per connection (``Connection: close``): the answer is relayed to its end."""
        with client, socket.create_connection(self.upstream) as upstream:
            request = _read_head(client)
            if not request:
                return
            head, body = request
            method, target = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
            length = _content_length(head)
            while len(body) < length:
                more = client.recv(65536)
                if not more:
                    return
                body += more
            lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"connection:")]
            upstream.sendall(b"\r\n".join([*lines, b"Connection: close", b"", b""]) + body)
            object_get = method == "GET" and "?" not in target and target.count("/") >= 2
            if self.mode == CUT and object_get:
                response = _read_head(upstream)
                if response:
                    self.cut_requests.append(target)
                    client.sendall(response[0] + response[1][: self.cut_after])
                return  # the connection closes mid-body
            while chunk := upstream.recv(65536):
                client.sendall(chunk)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
