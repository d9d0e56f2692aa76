"""HL7 v2 over MLLP (HL7 Minimal Lower Layer Protocol): <VT> message <FS><CR> frames on a TCP connection,
one ACK per message, any number of messages per connection. A threaded TCP server started and stopped
with the service."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import structlog

from services.ingest import metrics

log = structlog.get_logger("scr.ingest.mllp")

START, END = b"\x0b", b"\x1c\x0d"
_CHUNK = 65536
_POLL_SECONDS = 1.0  # how often a quiet connection looks at whether the server is stopping or has timed out
_HEAD_BYTES = 1024  # enough of an oversized frame to answer it (its MSH)


def frame(message: bytes) -> bytes:
    return START + message + END


@dataclass(frozen=True)
class Timeouts:
    """How long a connection may wait: between messages, and for the rest of a frame once it has started."""

    idle_seconds: float
    frame_seconds: float


class _State(Enum):
    BETWEEN = "between frames"
    IN_FRAME = "in a frame"
    SKIPPING = "in an oversized frame"  # answered already; its bytes are dropped until its end block


@dataclass(frozen=True)
class Received:
    """What the bytes of a connection amounted to: a `message`, an oversized frame's `head` (to answer it with an
    AR), or an `abandoned` frame (a new start block came before its end: the sender gave up on it)."""

    kind: str  # message | too-large | abandoned
    content: bytes


class FrameReader:
    """MLLP framing of one connection: bytes in as they arrive, whole frames out. A frame may arrive in any number
    of pieces, and its end block too; pure, so it is tested without a socket."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.frames_started = 0
        self._state = _State.BETWEEN
        self._held = bytearray()  # the open frame so far (after its start block), or the first half of an end block

    @property
    def in_frame(self) -> bool:
        return self._state is not _State.BETWEEN

    def feed(self, data: bytes) -> list[Received]:
        """Everything `data` completes, in order."""
        scanned = max(len(self._held) - len(END) + 1, 0)  # no start or end block lies wholly in what was held
        buffer, self._held = self._held, bytearray()
        buffer += data  # in place: a large frame arriving in many pieces is not copied for each one
        received: list[Received] = []
        while buffer:
            if self._state is _State.BETWEEN:
                start = buffer.find(START, scanned)
                if start < 0:
                    return received  # bytes outside a frame are not a message
                self._open()
                buffer, scanned = buffer[start + len(START):], 0
                continue
            end, restart = buffer.find(END, scanned), buffer.find(START, scanned)
            if restart >= 0 and (end < 0 or restart < end):
                received += self._abandon(frame_bytes=restart)
                buffer, scanned = buffer[restart + len(START):], 0
                self._open()
                continue
            if end >= 0:
                received += self._close(bytes(buffer[:end]))
                buffer, scanned = buffer[end + len(END):], 0
                continue
            received += self._hold(buffer)
            return received
        return received

    def _open(self) -> None:
        self._state = _State.IN_FRAME
        self.frames_started += 1

    def _abandon(self, *, frame_bytes: int) -> list[Received]:
        """MLLP: a start block inside an unfinished frame means the sender gave up on that frame and is sending
        again. It is dropped unanswered and unarchived (an oversized one was answered when it grew too large)."""
        log.info("mllp frame abandoned: a new start block came before its end", bytes=frame_bytes)
        return [Received("abandoned", b"")] if self._state is _State.IN_FRAME else []

    def _close(self, content: bytes) -> list[Received]:
        skipped, self._state = self._state is _State.SKIPPING, _State.BETWEEN
        if skipped:
            return []
        if len(content) > self.max_bytes:
            return [Received("too-large", content[:_HEAD_BYTES])]
        return [Received("message", content)]

    def _hold(self, buffer: bytearray) -> list[Received]:
        """Keep what a later read may complete: the open frame, or a trailing <FS> whose <CR> is still to come."""
        received = []
        # The frame may hold max_bytes and the first byte of its end block: that is not yet too large.
        if self._state is _State.IN_FRAME and len(buffer) > self.max_bytes + 1:
            self._state = _State.SKIPPING
            received.append(Received("too-large", bytes(buffer[:_HEAD_BYTES])))
        if self._state is _State.IN_FRAME:
            self._held = buffer
        elif buffer.endswith(END[:1]):
            self._held = buffer[-1:]
        return received


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        frames = FrameReader(self.server.max_bytes)
        last_byte = frame_opened = time.monotonic()
        while not self.server.stopping.is_set():
            left = self._time_left(frames, last_byte, frame_opened)
            if left <= 0:
                return
            self.request.settimeout(min(_POLL_SECONDS, left))
            try:
                chunk = self.request.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                _count_unfinished(frames, "closed")
                return
            last_byte, started = time.monotonic(), frames.frames_started
            for received in frames.feed(chunk):
                self._answer(received)
            if frames.frames_started != started:
                frame_opened = last_byte

    def _time_left(self, frames: FrameReader, last_byte: float, frame_opened: float) -> float:
        """Seconds before the connection is closed: a sender that stops mid-frame, or stays silent too long,
        would otherwise hold a thread and a socket for ever."""
        timeouts = self.server.timeouts
        if frames.in_frame:
            left = frame_opened + timeouts.frame_seconds - time.monotonic()
        else:
            left = last_byte + timeouts.idle_seconds - time.monotonic()
        if left <= 0:
            log.info("mllp connection closed: timed out", waiting="for the rest of a frame" if frames.in_frame
                     else "for a message")
            _count_unfinished(frames, "timed-out")
        return left

    def _answer(self, received: Received) -> None:
        if received.kind == "abandoned":
            metrics.MLLP_FRAMES_DROPPED.labels("abandoned").inc()
        elif received.kind == "too-large":
            self._send(self.server.too_large(received.content))
        else:
            self._send(self.server.on_message(received.content))

    def _send(self, ack: bytes) -> None:
        try:
            self.request.sendall(frame(ack))
        except OSError:
            log.info("mllp peer went away before its ACK")


def _count_unfinished(frames: FrameReader, reason: str) -> None:
    """A frame left open when its connection ends is dropped unanswered; the sender resends it."""
    if frames.in_frame:
        metrics.MLLP_FRAMES_DROPPED.labels(reason).inc()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], on_message: Callable[[bytes], bytes],
                 too_large: Callable[[bytes], bytes], max_bytes: int, timeouts: Timeouts) -> None:
        self.on_message, self.too_large, self.max_bytes = on_message, too_large, max_bytes
        self.timeouts = timeouts
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class MllpServer:
    """The listener: `on_message` turns one message into its ACK; `too_large` answers oversized frames."""

    def __init__(self, host: str, port: int, on_message: Callable[[bytes], bytes],
                 too_large: Callable[[bytes], bytes], max_bytes: int, timeouts: Timeouts) -> None:
        self._server = _Server((host, port), on_message, too_large, max_bytes, timeouts)
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
