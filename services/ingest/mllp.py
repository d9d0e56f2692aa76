"""HL7 v2 over MLLP (HL7 Minimal Lower Layer Protocol): <VT> message <FS><CR> frames on a TCP connection,
one ACK per message, any number of messages per connection. A threaded TCP server started and stopped
with the service."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("scr.ingest.mllp")

START, END = b"\x0b", b"\x1c\x0d"
_CHUNK = 65536
_IDLE_SECONDS = 1.0  # how often a quiet connection looks at whether the server is stopping


def frame(message: bytes) -> bytes:
    return START + message + END


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(_IDLE_SECONDS)
        buffer = b""
        skipping = False  # inside an oversized frame whose end we are waiting for
        while not self.server.stopping.is_set():
            try:
                chunk = self.request.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            buffer, skipping = self._drain(buffer, skipping)

    def _drain(self, buffer: bytes, skipping: bool) -> tuple[bytes, bool]:
        """Answer every complete frame in `buffer`; return what is left and whether a frame is being skipped."""
        while True:
            if skipping:
                end = buffer.find(END)
                if end < 0:
                    return b"", True  # keep discarding until the oversized frame ends
                buffer, skipping = buffer[end + len(END):], False
            start = buffer.find(START)
            if start < 0:
                return b"", False  # bytes outside a frame are not a message
            buffer = buffer[start:]
            end = buffer.find(END)
            if end < 0:
                if len(buffer) > self.server.max_bytes:
                    self._send(self.server.too_large(buffer[1:1024]))
                    return b"", True
                return buffer, False
            message = buffer[1:end]
            buffer = buffer[end + len(END):]
            self._send(self.server.too_large(message) if len(message) > self.server.max_bytes
                       else self.server.on_message(message))

    def _send(self, ack: bytes) -> None:
        try:
            self.request.sendall(frame(ack))
        except OSError:
            log.info("mllp peer went away before its ACK")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], on_message: Callable[[bytes], bytes],
                 too_large: Callable[[bytes], bytes], max_bytes: int) -> None:
        self.on_message, self.too_large, self.max_bytes = on_message, too_large, max_bytes
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class MllpServer:
    """The listener: `on_message` turns one message into its ACK; `too_large` answers oversized frames."""

    def __init__(self, host: str, port: int, on_message: Callable[[bytes], bytes],
                 too_large: Callable[[bytes], bytes], max_bytes: int) -> None:
        self._server = _Server((host, port), on_message, too_large, max_bytes)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="mllp", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MllpServer:
        self._thread.start()
        log.info("mllp listening", port=self.port)
        return self

    def stop(self) -> None:
        """Stop accepting, let open connections notice within a second, and release the port."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def open_connection(host: str, port: int, timeout: float = 30) -> socket.socket:
    """A client connection (for tests and tools)."""
    return socket.create_connection((host, port), timeout=timeout)
