"""LXD exec over its websockets: a small RFC 6455 client and the stream pump.

pylxd creates the exec operation (``POST /1.0/instances/NAME/exec``); the byte
streams then go over websockets that this module drives itself. pylxd's own
``Instance.execute`` cannot be used for cman's ``exec``: it sends stdin all at once
inside the websocket handshake (a terminal or a pipe that stays open would block
before the command even starts), runs ws4py threads with sleep loops, and has no
pty or window-size support. Here one thread selects over the local stdin and the
sockets, so Ctrl-C, stdin EOF and window changes are handled in one place.

LXD's exec protocol (``wait-for-websocket: true``), as the ``lxc`` client speaks it:

- without a pty: websockets ``0`` (stdin), ``1`` (stdout), ``2`` (stderr) and
  ``control``. Binary messages carry data; an empty *text* message is the EOF
  barrier in either direction.
- with a pty (``interactive: true``): one websocket ``0`` carries both
  directions, plus ``control``, on which JSON messages resize the pty
  (``window-resize``) or send a signal (``signal``).

LXD starts the command only once every websocket is connected, and sets the
operation's ``metadata.return`` to the exit code (128+N for a signal N).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..._sys import tty as _tty
from ...models import StdIO

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER = 65536

Dial = Callable[[], socket.socket]
"""Opens a connected (and, for HTTPS, TLS-wrapped) socket to the LXD server."""


class WebSocketError(Exception):
    """The websocket handshake or framing failed."""


class WebSocket:
    """A blocking websocket client connection (client side: frames are masked)."""

    def __init__(self, sock: socket.socket, leftover: bytes = b"") -> None:
        self.sock = sock
        self._buf = bytearray(leftover)
        self.closed = False

    @classmethod
    def connect(cls, dial: Dial, host: str, path: str, *, timeout: float = 10.0) -> WebSocket:
        sock = dial()
        try:
            sock.settimeout(timeout)
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WebSocketError(f"server closed the connection during the handshake for {path}")
                data += chunk
                if len(data) > _MAX_HEADER:
                    raise WebSocketError("handshake response too large")
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            if len(lines[0].split()) < 2 or lines[0].split()[1] != "101":
                raise WebSocketError(f"websocket handshake refused: {lines[0]}")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            if headers.get("sec-websocket-accept") != expected:
                raise WebSocketError("websocket handshake: bad Sec-WebSocket-Accept")
            sock.settimeout(None)
            return cls(sock, rest)
        except BaseException:
            sock.close()
            raise

    # -- sending ----------------------------------------------------------------------

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + _mask(payload, mask))

    def send_text(self, text: str) -> None:
        self.send(text.encode(), OP_TEXT)

    def send_eof(self) -> None:
        """LXD's end-of-stream barrier: an empty text message."""
        self.send(b"", OP_TEXT)

    # -- receiving --------------------------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        """Bytes already read from the kernel (our buffer, or TLS records) that select() cannot see."""
        if self._buf:
            return True
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionResetError("websocket closed mid-frame")
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def recv(self) -> tuple[int, bytes] | None:
        """One whole message as (opcode, payload); None once the peer closed.

        A ping is answered here and returned as ``(OP_PING, payload)`` rather than
        waiting for the next data frame: the caller selects again, so a quiet stream
        that LXD keeps alive with pings never blocks the pump.
        """
        if self.closed:
            return None
        message = bytearray()
        first_opcode: int | None = None
        try:
            while True:
                b0, b1 = self._read(2)
                fin, opcode, masked, n = b0 & 0x80, b0 & 0x0F, b1 & 0x80, b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                mask = self._read(4) if masked else b""
                payload = self._read(n)
                if masked:
                    payload = _mask(payload, mask)
                if opcode == OP_CLOSE:
                    self.closed = True
                    with contextlib.suppress(OSError):
                        self.send(payload[:2], OP_CLOSE)
                    return None
                if opcode == OP_PING:
                    self.send(payload, OP_PONG)
                    return (OP_PING, payload)
                if opcode == OP_PONG:
                    return (OP_PONG, payload)
                if opcode != OP_CONT:
                    first_opcode = opcode
                message += payload
                if fin:
                    return (first_opcode if first_opcode is not None else OP_BINARY, bytes(message))
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            self.closed = True
            return None

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, ssl.SSLError):
                self.send(struct.pack(">H", 1000), OP_CLOSE)
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


def _mask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


# -- dialers ------------------------------------------------------------------------------


def unix_dialer(path: str) -> Dial:
    def dial() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    return dial


def tls_dialer(host: str, port: int, *, cert: tuple[str, str], verify: bool | str) -> Dial:
    """TLS with a client certificate. ``verify``: True (system CAs), False, or a
    path to the server's certificate, which is then pinned by fingerprint, as
    pylxd and the ``lxc`` client do (LXD servers use self-signed certificates)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(cert[0], cert[1])
    pinned: bytes | None = None
    if isinstance(verify, str):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        pinned = hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(verify).read())).digest()  # noqa: SIM115
    elif not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_default_certs()

    def dial() -> socket.socket:
        raw = socket.create_connection((host, port), timeout=10)
        try:
            sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        if pinned is not None:
            der = sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).digest() != pinned:
                sock.close()
                raise WebSocketError(f"the server at {host}:{port} does not present the pinned certificate {verify}")
        return sock

    return dial


# -- the exec session ---------------------------------------------------------------------


@dataclass
class ExecChannels:
    """The connected websockets of one exec operation."""

    control: WebSocket
    stdin: WebSocket
    """With a pty this one also carries the output."""
    stdout: WebSocket | None
    stderr: WebSocket | None

    def all(self) -> list[WebSocket]:
        return [w for w in (self.control, self.stdin, self.stdout, self.stderr) if w is not None]

    def close(self) -> None:
        for ws in self.all():
            ws.close()


def connect_channels(dial: Dial, host: str, operation_path: str, fds: dict[str, str], *, pty: bool) -> ExecChannels:
    """Connect every websocket LXD waits for (it starts the command only then)."""
    opened: list[WebSocket] = []

    def one(key: str) -> WebSocket:
        ws = WebSocket.connect(dial, host, f"{operation_path}/websocket?secret={fds[key]}")
        opened.append(ws)
        return ws

    try:
        control = one("control")
        stdin = one("0")
        stdout = None if pty else one("1")
        stderr = None if pty else one("2")
    except BaseException:
        for ws in opened:
            ws.close()
        raise
    return ExecChannels(control, stdin, stdout, stderr)


def resize(control: WebSocket, rows: int, cols: int) -> None:
    control.send_text(json.dumps({"command": "window-resize", "args": {"width": str(cols), "height": str(rows)}}))


def send_signal(control: WebSocket, signum: int) -> None:
    control.send_text(json.dumps({"command": "signal", "signal": signum}))


class WsChannel:
    """An output websocket for the pump: data messages, and LXD's empty text message as the end."""

    def __init__(self, ws: WebSocket, stream: int) -> None:
        self.ws = ws
        self.stream = stream

    def fileno(self) -> int:
        return self.ws.fileno()

    def pending(self) -> bool:
        return self.ws.pending()

    def read(self) -> list[_tty.Chunk] | None:
        message = self.ws.recv()
        if message is None or (message[0] == OP_TEXT and not message[1]):
            return None
        if message[0] in (OP_PING, OP_PONG):
            return []
        return [(self.stream, message[1])]


class WsInbound:
    """stdin into websocket ``0``; without a pty its end is LXD's barrier (an empty text message)."""

    def __init__(self, ws: WebSocket, *, pty: bool) -> None:
        self.ws = ws
        self.pty = pty

    def send(self, data: bytes) -> bool:
        try:
            self.ws.send(data)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if not self.pty:
            with contextlib.suppress(OSError):
                self.ws.send_eof()


def pump(channels: ExecChannels, io: StdIO, *, pty: bool) -> int:
    """Move bytes between the local streams and the exec websockets until the output ends;
    return how many output bytes the command produced.

    stdin EOF is passed on as LXD's barrier (without a pty) so ``cat`` ends;
    in-memory stdin (``io.BytesIO``) is sent at once. With a pty the local
    terminal is put in raw mode and window changes go to the control socket.
    """
    if pty:
        outputs = [WsChannel(channels.stdin, _tty.STDOUT)]
    else:
        assert channels.stdout is not None and channels.stderr is not None
        outputs = [WsChannel(channels.stdout, _tty.STDOUT), WsChannel(channels.stderr, _tty.STDERR)]
    # The other websockets carry no data for us, but LXD pings them: keep answering.
    used = {c.ws for c in outputs}
    extras = [WsChannel(ws, _tty.STDOUT) for ws in channels.all() if ws not in used]
    with _tty.raw_terminal(io.stdin if pty else None):
        return _tty.pump(
            io, outputs, WsInbound(channels.stdin, pty=pty), extras=extras,
            resize=(lambda r, c: resize(channels.control, r, c)) if pty else None,
        )
