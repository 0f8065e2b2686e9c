"""The LXD exec websocket client and pump, against in-process fake servers (socketpairs)."""

from __future__ import annotations

import base64
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
from cman.models import StdIO


def server_frame(payload: bytes, opcode: int = ws.OP_BINARY, fin: bool = True) -> bytes:
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


def pair() -> tuple[ws.WebSocket, socket.socket]:
    a, b = socket.socketpair()
    return ws.WebSocket(a), b


def test_mask_roundtrip() -> None:
    data = bytes(range(256)) * 5
    mask = b"\x01\x02\x03\x04"
    assert ws._mask(ws._mask(data, mask), mask) == data
    assert ws._mask(b"", mask) == b""


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70000])
def test_send_lengths(size: int) -> None:
    client, server = pair()
    payload = b"x" * size
    threading.Thread(target=client.send, args=(payload,)).start()
    assert read_client_frame(server) == (ws.OP_BINARY, payload)


def test_recv_messages_fragments_ping_and_close() -> None:
    client, server = pair()
    server.sendall(
        server_frame(b"hello")
        + server_frame(b"frag-", ws.OP_TEXT, fin=False)
        + server_frame(b"ment", ws.OP_CONT)
        + server_frame(b"are you there", ws.OP_PING)
        + server_frame(struct.pack(">H", 1000), ws.OP_CLOSE)
    )
    assert client.recv() == (ws.OP_BINARY, b"hello")
    assert client.recv() == (ws.OP_TEXT, b"frag-ment")
    assert client.recv() == (ws.OP_PING, b"are you there")  # answered, not swallowed
    assert read_client_frame(server) == (ws.OP_PONG, b"are you there")
    assert client.recv() is None
    assert read_client_frame(server)[0] == ws.OP_CLOSE
    assert client.recv() is None


def test_handshake() -> None:
    a, b = socket.socketpair()

    def serve() -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += b.recv(4096)
        lines = request.decode().split("\r\n")
        key = next(ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("sec-websocket-key"))
        accept = base64.b64encode(hashlib.sha1((key + ws._GUID).encode()).digest()).decode()
        assert request.startswith(b"GET /1.0/operations/x/websocket?secret=s HTTP/1.1\r\n")
        assert b"origin" not in request.lower()
        b.sendall(f"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n".encode() + server_frame(b"early"))

    t = threading.Thread(target=serve)
    t.start()
    conn = ws.WebSocket.connect(lambda: a, "lxd", "/1.0/operations/x/websocket?secret=s")
    t.join()
    assert conn.pending()  # bytes that came with the handshake are not lost
    assert conn.recv() == (ws.OP_BINARY, b"early")


def test_handshake_refused() -> None:
    a, b = socket.socketpair()
    b.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ws.WebSocketError, match="403"):
        ws.WebSocket.connect(lambda: a, "lxd", "/x")


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
        server["control"].sendall(server_frame(b"ka", ws.OP_PING))
        server["0"].sendall(server_frame(b"ka", ws.OP_PING))
        while True:
            frame = read_client_frame(server["0"])
            received.append(frame)
            if frame[0] == ws.OP_TEXT:
                break
        server["1"].sendall(server_frame(b"out-1 ") + server_frame(b"out-2") + server_frame(b"", ws.OP_TEXT))
        server["2"].sendall(server_frame(b"err") + server_frame(b"", ws.OP_TEXT))

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
    data = [f for f in received if f[0] == ws.OP_BINARY]
    assert b"".join(d for _, d in data) == b"the input"
    assert received[-1] == (ws.OP_TEXT, b""), "stdin EOF is passed on as LXD's barrier"


def test_pump_no_stdin_sends_eof_first() -> None:
    channels, server = _channels()
    server["1"].sendall(server_frame(b"", ws.OP_TEXT))
    server["2"].close()  # a closed stream also ends it
    ws.pump(channels, StdIO(None, io.BytesIO(), io.BytesIO()), pty=False)
    assert read_client_frame(server["0"]) == (ws.OP_TEXT, b"")


def test_pump_with_pty_uses_one_socket() -> None:
    c_control, _s_control = pair()
    c_in, s_in = pair()
    channels = ws.ExecChannels(c_control, c_in, None, None)
    s_in.sendall(server_frame(b"prompt# ") + server_frame(struct.pack(">H", 1000), ws.OP_CLOSE))
    out = io.BytesIO()
    produced = ws.pump(channels, StdIO(io.BytesIO(b"ls\n"), out, io.BytesIO(), tty=True), pty=True)
    assert out.getvalue() == b"prompt# "
    assert produced == 8
    assert read_client_frame(s_in) == (ws.OP_BINARY, b"ls\n")  # no EOF barrier on a pty


def test_control_messages() -> None:
    client, server = pair()
    ws.resize(client, 33, 101)
    ws.send_signal(client, 2)
    op, data = read_client_frame(server)
    assert op == ws.OP_TEXT
    assert json.loads(data) == {"command": "window-resize", "args": {"width": "101", "height": "33"}}
    assert json.loads(read_client_frame(server)[1]) == {"command": "signal", "signal": 2}
