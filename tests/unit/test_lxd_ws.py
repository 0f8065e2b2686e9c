"""The LXD exec websocket client (wsproto) and its pump adapters, against real socketpairs.

The server side is written by hand here (frames crafted byte by byte), so the tests can
put a ping between two fragments of one message, send a message over the size cap, or
split a frame across two reads, as a real daemon (or a broken one) may.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import socket
import struct
import threading
from typing import IO, cast

import pytest

from cman._sys.tty import Tee
from cman.backends.lxd import ws
from cman.errors import EngineError
from cman.models import StdIO

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload: bytes, opcode: int = OP_BINARY, fin: bool = True) -> bytes:
    """A frame as a server sends it (not masked)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def close_frame(code: int = 1000) -> bytes:
    return server_frame(struct.pack(">H", code), OP_CLOSE)


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Read one masked client frame from the server side."""
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            assert chunk, "client closed"
            buf += chunk
        return buf

    b0, b1 = exact(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    mask = exact(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(n)))
    return b0 & 0x0F, data


def _accept_handshake(server: socket.socket, extra: bytes = b"") -> bytes:
    """Answer the client's upgrade request like LXD does; returns the request."""
    request = b""
    while b"\r\n\r\n" not in request:
        request += server.recv(4096)
    lines = request.decode().split("\r\n")
    key = next(ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    server.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode() + extra
    )
    return request


def pair(max_message: int = ws.MAX_MESSAGE) -> tuple[ws.WebSocket, socket.socket]:
    """A connected client websocket (the real handshake) and the raw server socket."""
    a, b = socket.socketpair()
    t = threading.Thread(target=_accept_handshake, args=(b,))
    t.start()
    client = ws.WebSocket.connect(lambda: a, "lxd", "/1.0/operations/x/websocket?secret=s", max_message=max_message)
    t.join()
    return client, b


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70000])
def test_send_lengths(size: int) -> None:
    client, server = pair()
    payload = b"x" * size
    threading.Thread(target=client.send, args=(payload,)).start()
    assert read_client_frame(server) == (OP_BINARY, payload)


def test_a_ping_between_fragments_keeps_the_message() -> None:
    """Failed on the old client: the fragments collected before the ping were dropped."""
    client, server = pair()
    server.sendall(
        server_frame(b"hello")
        + server_frame(b"frag-", OP_TEXT, fin=False)
        + server_frame(b"are you there", OP_PING)
        + server_frame(b"me", OP_CONT, fin=False)
        + server_frame(b"unsolicited", OP_PONG)
        + server_frame(b"nt", OP_CONT)
        + server_frame(b"bin-", OP_BINARY, fin=False)
        + server_frame(b"again", OP_PING)
        + server_frame(b"ary", OP_CONT)
        + close_frame()
    )
    assert client.recv() == (ws.OP_BINARY, b"hello")
    assert client.recv() == (ws.OP_TEXT, b"frag-ment")
    assert client.recv() == (ws.OP_BINARY, b"bin-ary")
    assert read_client_frame(server) == (OP_PONG, b"are you there")
    assert read_client_frame(server) == (OP_PONG, b"again")
    assert client.recv() is None
    assert read_client_frame(server) == (OP_CLOSE, struct.pack(">H", 1000))  # the close is answered
    assert client.recv() is None and client.closed


def test_a_ping_alone_is_answered_at_once() -> None:
    client, server = pair()
    server.sendall(server_frame(b"keepalive", OP_PING))
    client.receive()  # one read: no message for the caller, but the pong is out
    assert client.next_message() is None
    assert read_client_frame(server) == (OP_PONG, b"keepalive")


def test_a_message_over_the_cap_is_an_error() -> None:
    """Failed on the old client: it had no cap and collected 18 MiB."""
    client, server = pair()
    half = b"y" * (9 << 20)

    def send() -> None:
        with_ping = server_frame(half, OP_BINARY, fin=False) + server_frame(b"", OP_PING) + server_frame(half, OP_CONT)
        with contextlib.suppress(OSError):  # the client hangs up once it saw too much
            server.sendall(with_ping)

    t = threading.Thread(target=send)
    t.start()
    with pytest.raises(ws.WebSocketError, match="16777216-byte limit"):
        while client.recv() is not None:
            pass
    assert client.closed
    client.close()  # as the exec session does: the server's send ends
    t.join()


def test_one_oversized_frame_is_refused_before_its_payload_arrives() -> None:
    client, server = pair(max_message=1024)
    server.sendall(server_frame(b"z" * 1500))
    with pytest.raises(ws.WebSocketError, match="1024-byte limit"):
        client.recv()
    assert read_client_frame(server)[0] == OP_CLOSE


def test_a_frame_split_across_reads_does_not_block_the_pump() -> None:
    client, server = pair()
    frame = server_frame(b"split-data")
    channel = ws.WsChannel(client, 1)
    server.sendall(frame[:5])
    assert channel.read() == []  # half a frame: nothing yet, and read() returned
    server.sendall(frame[5:])
    assert channel.read() == [(1, b"split-data")]


def test_data_and_the_barrier_in_one_read() -> None:
    client, server = pair()
    channel = ws.WsChannel(client, 2)
    server.sendall(server_frame(b"last words") + server_frame(b"", OP_TEXT))
    assert channel.read() == [(2, b"last words")]
    assert channel.pending(), "the end is pending even though the socket has nothing more"
    assert channel.read() is None


def test_bad_frame_is_an_error() -> None:
    client, server = pair()
    server.sendall(server_frame(b"x", OP_CONT))  # a continuation without a start
    with pytest.raises(ws.WebSocketError, match="bad websocket frame"):
        client.recv()


def test_handshake_keeps_early_frames_and_sends_no_origin() -> None:
    a, b = socket.socketpair()
    seen: list[bytes] = []
    t = threading.Thread(target=lambda: seen.append(_accept_handshake(b, server_frame(b"early"))))
    t.start()
    conn = ws.WebSocket.connect(lambda: a, "lxd", "/1.0/operations/x/websocket?secret=s")
    t.join()
    assert seen[0].startswith(b"GET /1.0/operations/x/websocket?secret=s HTTP/1.1\r\n")
    assert b"origin" not in seen[0].lower()
    assert conn.pending()  # bytes that came with the handshake are not lost
    assert conn.recv() == (ws.OP_BINARY, b"early")


def test_handshake_refused() -> None:
    a, b = socket.socketpair()
    b.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ws.WebSocketError, match="403"):
        ws.WebSocket.connect(lambda: a, "lxd", "/x")


def test_handshake_with_a_wrong_accept_key() -> None:
    a, b = socket.socketpair()
    b.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")
    with pytest.raises(ws.WebSocketError, match="handshake"):
        ws.WebSocket.connect(lambda: a, "lxd", "/x")


def test_handshake_server_hangs_up() -> None:
    a, b = socket.socketpair()

    def hang_up() -> None:
        b.recv(4096)
        b.close()

    threading.Thread(target=hang_up).start()
    with pytest.raises(ws.WebSocketError, match="closed the connection"):
        ws.WebSocket.connect(lambda: a, "lxd", "/x")


def test_send_after_close_is_a_broken_pipe() -> None:
    client, server = pair()
    server.sendall(close_frame())
    assert client.recv() is None
    with pytest.raises(OSError):
        client.send(b"late")
    inbound = ws.WsInbound(client, pty=False)
    assert inbound.send(b"late") is False
    inbound.close()  # no error either


def _channels() -> tuple[ws.ExecChannels, dict[str, socket.socket]]:
    c_control, s_control = pair()
    c_in, s_in = pair()
    c_out, s_out = pair()
    c_err, s_err = pair()
    return ws.ExecChannels(c_control, c_in, c_out, c_err), {"control": s_control, "0": s_in, "1": s_out, "2": s_err}


def test_pump_without_pty() -> None:
    channels, server = _channels()
    received: list[tuple[int, bytes]] = []

    def remote() -> None:
        # LXD pings the quiet websockets too; the pump must answer and go on.
        server["control"].sendall(server_frame(b"ka", OP_PING))
        server["0"].sendall(server_frame(b"ka", OP_PING))
        while True:
            frame = read_client_frame(server["0"])
            received.append(frame)
            if frame[0] == OP_TEXT:
                break
        server["1"].sendall(server_frame(b"out-1 ") + server_frame(b"out-", fin=False) + server_frame(b"p", OP_PING)
                            + server_frame(b"2", OP_CONT) + server_frame(b"", OP_TEXT))
        server["2"].sendall(server_frame(b"err") + server_frame(b"", OP_TEXT))

    t = threading.Thread(target=remote)
    t.start()
    out, err = io.BytesIO(), io.BytesIO()
    taps = (Tee(out, 8), Tee(err, 8))
    produced = ws.pump(channels, StdIO(io.BytesIO(b"the input"), cast(IO[bytes], taps[0]),
                                       cast(IO[bytes], taps[1])), pty=False)
    t.join()
    assert out.getvalue() == b"out-1 out-2"
    assert err.getvalue() == b"err"
    assert produced == len(b"out-1 out-2err")
    assert bytes(taps[0].data) == b"-1 out-2"  # the tap keeps the last bytes only
    data = [f for f in received if f[0] == OP_BINARY]
    assert b"".join(d for _, d in data) == b"the input"
    assert received[-1] == (OP_TEXT, b""), "stdin EOF is passed on as LXD's barrier"
    if (OP_PONG, b"ka") not in received:  # answered after the remote stopped reading
        server["0"].settimeout(5)
        assert read_client_frame(server["0"]) == (OP_PONG, b"ka"), "the stdin websocket's ping was answered"
    assert read_client_frame(server["control"]) == (OP_PONG, b"ka")
    assert read_client_frame(server["1"]) == (OP_PONG, b"p")


def test_pump_no_stdin_sends_eof_first() -> None:
    channels, server = _channels()
    server["1"].sendall(server_frame(b"", OP_TEXT))
    server["2"].close()  # a closed stream also ends it
    ws.pump(channels, StdIO(None, io.BytesIO(), io.BytesIO()), pty=False)
    assert read_client_frame(server["0"]) == (OP_TEXT, b"")


def test_pump_with_pty_uses_one_socket() -> None:
    c_control, _s_control = pair()
    c_in, s_in = pair()
    channels = ws.ExecChannels(c_control, c_in, None, None)
    s_in.sendall(server_frame(b"prompt# ") + close_frame())
    out = io.BytesIO()
    produced = ws.pump(channels, StdIO(io.BytesIO(b"ls\n"), out, io.BytesIO(), tty=True), pty=True)
    assert out.getvalue() == b"prompt# "
    assert produced == 8
    assert read_client_frame(s_in) == (OP_BINARY, b"ls\n")  # no EOF barrier on a pty


def test_pump_raises_on_an_oversized_message() -> None:
    c_control, _s_control = pair()
    c_in, s_in = pair(max_message=64)
    channels = ws.ExecChannels(c_control, c_in, None, None)
    s_in.sendall(server_frame(b"q" * 100))
    with pytest.raises(ws.WebSocketError):
        ws.pump(channels, StdIO(None, io.BytesIO(), io.BytesIO(), tty=True), pty=True)


def test_websocket_errors_are_engine_errors_at_the_exec_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that breaks the framing mid-exec ends `exec` with one line (exit 1), no traceback."""
    from cman.backends.lxd import LxdBackend

    class Api:
        def __getattr__(self, _name: str) -> Api:
            return self

        def __getitem__(self, _key: str) -> Api:
            return self

        def post(self, **_kw: object) -> Api:
            return self

        def json(self) -> dict[str, object]:
            return {"operation": "/1.0/operations/abc", "metadata": {"metadata": {"fds": {}}}}

    backend = LxdBackend()
    monkeypatch.setattr(LxdBackend, "client", property(lambda _self: type("C", (), {"api": Api()})()))
    channels = ws.ExecChannels(*(pair()[0] for _ in range(4)))
    monkeypatch.setattr(ws, "connect_channels", lambda *a, **k: channels)
    monkeypatch.setattr(LxdBackend, "_dial", lambda _self: (lambda: socket.socket(), "lxd"))

    def broken(*_a: object, **_k: object) -> int:
        raise ws.WebSocketError("bad websocket frame from the server: 1002")

    monkeypatch.setattr(ws, "pump", broken)
    with pytest.raises(EngineError, match="lxd exec in c1: bad websocket frame"):
        backend._exec("c1", ["true"], StdIO(None, io.BytesIO(), io.BytesIO()), env=None)


def test_control_messages() -> None:
    client, server = pair()
    ws.resize(client, 33, 101)
    ws.send_signal(client, 2)
    op, data = read_client_frame(server)
    assert op == OP_TEXT
    assert json.loads(data) == {"command": "window-resize", "args": {"width": "101", "height": "33"}}
    assert json.loads(read_client_frame(server)[1]) == {"command": "signal", "signal": 2}
