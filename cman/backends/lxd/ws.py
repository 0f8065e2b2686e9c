"""LXD exec over its websockets: a wsproto client and the stream adapters of the pump.

pylxd creates the exec operation (``POST /1.0/instances/NAME/exec``); the byte
streams then go over websockets that this module drives itself. pylxd's own
``Instance.execute`` cannot be used for cman's ``exec``: it sends stdin all at once
inside the websocket handshake (a terminal or a pipe that stays open would block
before the command even starts), runs ws4py threads with sleep loops, and has no
pty or window-size support.

The protocol is wsproto's (sans-IO: it parses and builds frames, cman owns the
sockets), so the sockets fit the one loop of :func:`cman._sys.tty.pump`: a
readable socket is read once (:meth:`WebSocket.receive`, never blocking for a
whole message), wsproto turns the bytes into events, pings are answered at once,
fragments of a message are collected across the control frames the server puts
between them, and a message over :data:`MAX_MESSAGE` bytes is an error rather
than unbounded memory.

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

import contextlib
import hashlib
import json
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..._sys import tty as _tty

if TYPE_CHECKING:
    from wsproto.connection import Connection
    from wsproto.events import Event

    from ...models import StdIO

OP_TEXT, OP_BINARY = 0x1, 0x2
"""The two kinds of data message (RFC 6455 opcodes)."""
MAX_MESSAGE = 16 << 20
"""The largest message accepted (LXD's exec frames are a few KiB; a runaway peer is an error, not memory)."""
RECV_SIZE = 65536
CLOSE_NORMAL, CLOSE_TOO_BIG = 1000, 1009

Dial = Callable[[], socket.socket]
"""Opens a connected (and, for HTTPS, TLS-wrapped) socket to the LXD server."""
Message = tuple[int, bytes]
"""(OP_TEXT or OP_BINARY, payload): one whole message."""


class WebSocketError(Exception):
    """The websocket handshake or framing failed, or a message was too large."""


class WebSocket:
    """A websocket client connection over a blocking socket, framed by wsproto."""

    def __init__(self, sock: socket.socket, conn: Connection, *, max_message: int = MAX_MESSAGE) -> None:
        self.sock = sock
        self._conn = conn
        self.max_message = max_message
        self._inbox: deque[Message] = deque()
        self._partial = bytearray()
        self.closed = False

    @classmethod
    def connect(cls, dial: Dial, host: str, path: str, *, timeout: float = 10.0,
                max_message: int = MAX_MESSAGE) -> WebSocket:
        """Open ``path`` with the upgrade handshake; bytes that came with the answer are kept."""
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, RejectConnection, Request
        from wsproto.utilities import ProtocolError

        sock = dial()
        try:
            sock.settimeout(timeout)
            handshake = WSConnection(ConnectionType.CLIENT)
            sock.sendall(handshake.send(Request(host=host, target=path)))
            accepted = False
            while not accepted:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionResetError
                try:
                    handshake.receive_data(data)
                    for event in handshake.events():
                        if isinstance(event, RejectConnection):
                            raise WebSocketError(f"websocket handshake refused: HTTP {event.status_code}")
                        if isinstance(event, AcceptConnection):
                            accepted = True
                            break
                except ProtocolError as err:
                    raise WebSocketError(f"websocket handshake for {path} failed: {err}") from None
            assert handshake.connection is not None
            sock.settimeout(None)
            ws = cls(sock, handshake.connection, max_message=max_message)
            ws._process()  # frames that arrived with the handshake's answer
            return ws
        except (BrokenPipeError, ConnectionResetError):
            sock.close()
            raise WebSocketError(f"server closed the connection during the handshake for {path}") from None
        except BaseException:
            sock.close()
            raise

    # -- sending ----------------------------------------------------------------------

    def _send_event(self, event: Event) -> None:
        from wsproto.utilities import LocalProtocolError

        try:
            data = self._conn.send(event)
        except LocalProtocolError:
            raise BrokenPipeError("the websocket is closed") from None
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        """One binary message."""
        from wsproto.events import BytesMessage

        self._send_event(BytesMessage(data=payload))

    def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage

        self._send_event(TextMessage(data=text))

    def send_eof(self) -> None:
        """LXD's end-of-stream barrier: an empty text message."""
        self.send_text("")

    # -- receiving --------------------------------------------------------------------

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> bool:
        """Whole messages already read, or TLS records the kernel no longer shows to select()."""
        if self._inbox:
            return True
        return not self.closed and isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def receive(self) -> None:
        """Read what the socket has (one ``recv``: call it when the socket is readable) and
        queue the whole messages it completes. Pings are answered here. Raises
        WebSocketError for a message over the cap or a framing error."""
        if self.closed:
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            data = b""
        self._conn.receive_data(data or None)
        self._process()

    def next_message(self) -> Message | None:
        """The oldest whole message received, or None."""
        return self._inbox.popleft() if self._inbox else None

    def recv(self) -> Message | None:
        """Block until a whole message arrives; None once the connection is closed."""
        while not self._inbox and not self.closed:
            self.receive()
        return self.next_message()

    def _process(self) -> None:
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection, Ping, TextMessage
        from wsproto.events import Message as WsMessage

        for event in self._conn.events():
            if isinstance(event, WsMessage):
                chunk = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                if len(self._partial) + len(chunk) > self.max_message:
                    self._abort(CLOSE_TOO_BIG, "message too big")
                    raise WebSocketError(f"the server sent a message over the {self.max_message}-byte limit")
                self._partial += chunk
                if event.message_finished:
                    self._inbox.append((OP_TEXT if isinstance(event, TextMessage) else OP_BINARY, bytes(self._partial)))
                    self._partial.clear()
            elif isinstance(event, Ping):
                with contextlib.suppress(OSError):
                    self._send_event(event.response())
            elif isinstance(event, CloseConnection):
                state = self._conn.state
                if state == ConnectionState.OPEN:  # wsproto could not parse what the server sent
                    self._abort(event.code, event.reason or "protocol error")
                    raise WebSocketError(f"bad websocket frame from the server: {event.reason or event.code}")
                if state == ConnectionState.REMOTE_CLOSING:
                    with contextlib.suppress(OSError):
                        self._send_event(event.response())
                self.closed = True
            # Pong: nothing to do.

    def _abort(self, code: int, reason: str) -> None:
        from wsproto.events import CloseConnection

        with contextlib.suppress(OSError, ssl.SSLError):
            self._send_event(CloseConnection(code=code, reason=reason))
        self.closed = True

    def close(self) -> None:
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection

        if not self.closed and self._conn.state == ConnectionState.OPEN:
            with contextlib.suppress(OSError, ssl.SSLError):
                self._send_event(CloseConnection(code=CLOSE_NORMAL))
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


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
    """An output websocket for the pump: data messages, and LXD's empty text message as the end.

    Each :meth:`read` takes at most one ``recv`` from the socket, so a message whose
    fragments are still on their way never blocks the pump (stdin, resizes, the other
    streams go on meanwhile).
    """

    def __init__(self, ws: WebSocket, stream: int) -> None:
        self.ws = ws
        self.stream = stream
        self.ended = False
        """The end was seen after data that was handed out first: the next read says so."""

    def fileno(self) -> int:
        return self.ws.fileno()

    def pending(self) -> bool:
        return self.ended or self.ws.pending()

    def read(self) -> list[_tty.Chunk] | None:
        if self.ended:
            return None
        message = self.ws.next_message()
        if message is None:
            self.ws.receive()
            message = self.ws.next_message()
        out: list[_tty.Chunk] = []
        while message is not None:
            if message == (OP_TEXT, b""):  # LXD's barrier: this stream is done
                self.ended = True
                break
            out.append((self.stream, message[1]))
            message = self.ws.next_message()
        if self.ended or self.ws.closed:
            self.ended = True
            return out or None
        return out


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
