"""A STAND-IN for the Proxmox VE API, built from PVE's published parameter schema. It is not PVE.

No PVE server can run on Debian, so cman's PVE path is tested against this: a small HTTPS
server on 127.0.0.1 that knows only what PVE publishes (``cman/pve/lxc-api-schema.json``,
a copy of pve-docs' ``apidata.js`` facts) and a few rules copied from PVE's source:

- every request's parameters (path and body or query together) are checked against the
  schema of its endpoint: an unknown parameter, a missing required one or a value breaking
  its type, format, pattern, bounds or enum is a 400 ``Parameter verification failed.``
  with the per-parameter ``errors``, as PVE answers. An endpoint the schema lacks is a 501.
  The check is :func:`cman.pve.schema.check_request`, the same code cman uses before it
  sends (one home for the schema's rules); what this adds is the wire: what proxmoxer
  actually puts in the path, the form body and the query.
- authentication: ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``, or a ticket
  cookie from ``POST /access/ticket`` plus ``CSRFPreventionToken`` on writes (that login
  endpoint is not in the schema file: its answer is shaped as PVE documents it).
- pve-container's ``check_ct_modify_config_perm`` for ``features``: only ``root@pam`` with
  a ticket may set features other than nesting, or any feature on a privileged container;
  a token (``root@pam!x`` is not ``root@pam``) gets PVE's 403 message.
- create and start are asynchronous tasks with UPIDs (``UPID:node:PID:PSTART:STARTTIME:
  TYPE:ID:USER:``) whose status goes ``running`` -> ``stopped`` with an ``exitstatus``.

What it does not do: storage, templates, real containers, ACLs beyond the root@pam rule.
"""

from __future__ import annotations

import datetime
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cman.pve import schema

PREFIX = "/api2/json"
CREATE = "POST /nodes/{node}/lxc"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    who: str | None
    status: int


@dataclass
class Task:
    upid: str
    node: str
    polls_left: int
    exitstatus: str


@dataclass
class StandIn:
    """The server's state; :meth:`start` serves it on 127.0.0.1 with ``cert``/``key``."""

    cert: Path
    key: Path
    tokens: dict[str, str] = field(default_factory=dict)
    """``USER@REALM!TOKENID`` -> secret."""
    passwords: dict[str, str] = field(default_factory=dict)
    """``USER@REALM`` -> password, for ``POST /access/ticket``."""
    task_polls: int = 2
    """Status polls that answer ``running`` before a task stops."""
    fail_create: str | None = None
    """When set, a create task stops with this exitstatus."""
    stall: bool = False
    """Tasks never stop (for timeouts)."""
    requests: list[Recorded] = field(default_factory=list)
    containers: dict[int, dict[str, str]] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)
    tasks: dict[str, Task] = field(default_factory=dict)
    tickets: dict[str, tuple[str, str]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StandIn:
        state = self

        class Handler(_Handler):
            standin = state

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # -- the API ------------------------------------------------------------------------------------

    def new_task(self, node: str, kind: str, vmid: int, who: str, exitstatus: str = "OK") -> str:
        now = int(time.time())
        upid = f"UPID:{node}:{secrets.randbelow(2**22):08X}:{secrets.randbelow(2**31):08X}:{now:08X}:{kind}:{vmid}:{who}:"
        self.tasks[upid] = Task(upid, node, self.task_polls, exitstatus)
        return upid

    def nextid(self) -> int:
        vmid = 100
        while vmid in self.containers:
            vmid += 1
        return vmid


class ApiError(Exception):
    def __init__(self, status: int, reason: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.errors = status, reason, errors


def features_rule(params: dict[str, str], who: str, old: dict[str, str] | None = None) -> None:
    """pve-container's check_ct_modify_config_perm, the ``features`` branch, for a new container."""
    if who == "root@pam" or "features" not in params:
        return
    if params.get("unprivileged", "0") != "1":
        raise ApiError(403, "Permission check failed (changing feature flags for privileged container is only "
                            "allowed for root@pam)")
    wanted = schema.parse_property_string(schema.properties(CREATE)["features"]["format"], params["features"])
    if not (len(wanted) == 1 and wanted.get("nesting") == "1") and wanted:
        raise ApiError(403, "Permission check failed (changing feature flags (except nesting) is only allowed "
                            "for root@pam)")


def _route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The schema endpoint ``method path`` matches, and its path parameters."""
    parts = path.strip("/").split("/")
    for endpoint in schema.load():
        verb, template = endpoint.split(" ", 1)
        tparts = template.strip("/").split("/")
        if verb != method or len(tparts) != len(parts):
            continue
        found: dict[str, str] = {}
        for t, p in zip(tparts, parts, strict=True):
            if t.startswith("{") and t.endswith("}"):
                found[t[1:-1]] = unquote(p)
            elif t != p:
                break
        else:
            return endpoint, found
    return None


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _params(self, method: str) -> dict[str, str]:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        raw = parse_qs(parts.query if method in ("GET", "DELETE") else body, keep_blank_values=True)
        if any(len(v) > 1 for v in raw.values()):
            raise ApiError(400, "Parameter verification failed.", {k: "duplicate parameter" for k, v in raw.items()
                                                                   if len(v) > 1})
        return {k: v[0] for k, v in raw.items()}

    def _handle(self, method: str) -> None:
        state = self.standin
        path = urlsplit(self.path).path
        who: str | None = None
        params: dict[str, str] = {}
        try:
            params = self._params(method)
            if not path.startswith(PREFIX + "/"):
                raise ApiError(404, "Not Found")
            path = path[len(PREFIX):]
            if (method, path) == ("POST", "/access/ticket"):
                data: Any = self._login(params)
            else:
                who = self._auth(method)
                routed = _route(method, path)
                if routed is None:
                    raise ApiError(501, f"Method '{method} {path}' not implemented")
                endpoint, path_params = routed
                everything = {**path_params, **params}
                errors = schema.check_request(endpoint, everything)
                if errors:
                    raise ApiError(400, "Parameter verification failed.", errors)
                with state._lock:
                    data = self._answer(endpoint, everything, who)
            self._send(200, "OK", {"data": data})
            status = 200
        except ApiError as err:
            body: dict[str, Any] = {"data": None}
            if err.errors:
                body["errors"] = err.errors
            self._send(err.status, err.reason, body)
            status = err.status
        with state._lock:
            shown = {k: ("***" if k == "password" else v) for k, v in params.items()}
            state.requests.append(Recorded(method, path, shown, who, status))

    def _send(self, status: int, reason: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status, reason)  # PVE puts its message in the reason phrase
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _login(self, params: dict[str, str]) -> dict[str, str]:
        user, password = params.get("username", ""), params.get("password", "")
        if not password or self.standin.passwords.get(user) != password:
            raise ApiError(401, "authentication failure")
        ticket, csrf = f"PVE:{user}:{secrets.token_hex(16)}", secrets.token_hex(16)
        self.standin.tickets[ticket] = (user, csrf)
        return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf}

    def _auth(self, method: str) -> str:
        header = self.headers.get("Authorization", "")
        if header.startswith("PVEAPIToken="):
            ident, sep, secret = header[len("PVEAPIToken="):].partition("=")
            if sep and self.standin.tokens.get(ident) == secret:
                return ident
            raise ApiError(401, "invalid token value!")
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "PVEAuthCookie" and unquote(value) in self.standin.tickets:
                user, csrf = self.standin.tickets[unquote(value)]
                if method != "GET" and self.headers.get("CSRFPreventionToken") != csrf:
                    raise ApiError(401, "Permission denied - invalid csrf token")
                return user
        raise ApiError(401, "No ticket")

    def _answer(self, endpoint: str, p: dict[str, str], who: str) -> Any:
        state = self.standin
        if endpoint == "GET /cluster/nextid":
            if "vmid" in p and int(p["vmid"]) in state.containers:
                raise ApiError(400, "Parameter verification failed.", {"vmid": f"VM {p['vmid']} already exists"})
            return int(p["vmid"]) if "vmid" in p else state.nextid()
        if endpoint == CREATE:
            vmid = int(p["vmid"])
            if vmid in state.containers:
                raise ApiError(500, f"CT {vmid} already exists on node '{p['node']}'")
            features_rule(p, who)
            config_keys = set(schema.properties("PUT /nodes/{node}/lxc/{vmid}/config"))
            if state.fail_create is None:
                state.containers[vmid] = {k: v for k, v in p.items() if schema.schema_key(k) in config_keys
                                          and k not in ("node", "vmid")}
            return state.new_task(p["node"], "vzcreate", vmid, who, state.fail_create or "OK")
        if endpoint == "POST /nodes/{node}/lxc/{vmid}/status/start":
            vmid = int(p["vmid"])
            if vmid not in state.containers:
                raise ApiError(500, f"Configuration file 'nodes/{p['node']}/lxc/{vmid}.conf' does not exist")
            state.running.add(vmid)
            return state.new_task(p["node"], "vzstart", vmid, who)
        if endpoint == "GET /nodes/{node}/tasks/{upid}/status":
            task = state.tasks.get(p["upid"])
            if task is None or task.node != p["node"]:
                raise ApiError(500, f"unable to parse worker upid '{p['upid']}'")
            fields = p["upid"].split(":")
            status: dict[str, Any] = {"upid": task.upid, "node": task.node, "pid": int(fields[2], 16),
                                      "pstart": int(fields[3], 16), "starttime": int(fields[4], 16),
                                      "type": fields[5], "id": fields[6], "user": fields[7], "status": "running"}
            if not state.stall and task.polls_left <= 0:
                status.update(status="stopped", exitstatus=task.exitstatus)
            task.polls_left -= 1
            return status
        if endpoint == "GET /nodes/{node}/lxc/{vmid}/config":
            config = state.containers.get(int(p["vmid"]))
            if config is None:
                raise ApiError(500, f"Configuration file 'nodes/{p['node']}/lxc/{p['vmid']}.conf' does not exist")
            return config
        raise ApiError(501, f"'{endpoint}' is in the schema but not served by the stand-in")


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (as PVE's pve-root-ca) and a server certificate for 127.0.0.1 signed by it:
    (ca.pem, server.pem, server.key), the key readable by the owner only."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cman test PVE stand-in CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path
