"""A stand-in AzureML workspace on 127.0.0.1: TLS, bearer-token checks, and a real MLflow
server behind it.

azureml-mlflow turns ``azureml://<host>/mlflow/v1.0/<workspace path>`` into
``https://<host>/mlflow/v2.0/<workspace path>/api/2.0/mlflow/...`` (https is hard-coded)
and sends ``Authorization: Bearer <token>``. :class:`WorkspaceProxy` terminates TLS with a
self-signed certificate for 127.0.0.1 (clients trust it through ``REQUESTS_CA_BUNDLE``),
refuses any request without an expected token, strips the workspace prefix and forwards
the rest to a plain ``mlflow server``. It can answer the first log-batch requests with
HTTP 429, as AzureML does when it throttles, and it answers Azure Resource Manager's
"get workspace" call so the region lookup can be tested too.

:func:`refuse_non_loopback` patches the socket layer so that any connection or name
lookup for an address other than 127.0.0.1 fails and is recorded: the tests assert that
nothing tried to leave the machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_self_signed_cert(folder: str | Path) -> tuple[Path, Path]:
    """A certificate (which is its own CA) and key for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    authorized: bool
    status: int


@dataclass
class WorkspaceProxy:
    """The TLS front of a fake workspace; start() it, then use `tracking_uri`."""

    upstream: str
    cert: Path
    key: Path
    workspace_path: str
    tokens: set[str] = field(default_factory=set)
    throttle_log_batch: int = 0
    """How many of the next log-batch requests get HTTP 429."""
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def tracking_uri(self) -> str:
        return f"azureml://127.0.0.1:{self.port}/mlflow/v1.0{self.workspace_path}"

    @property
    def arm_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/arm"

    def start(self) -> WorkspaceProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy.handle(self)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True, name="workspace-proxy").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ requests
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        header = request.headers.get("Authorization", "")
        authorized = header.startswith("Bearer ") and header[len("Bearer ") :] in self.tokens
        path = request.path
        if not authorized:
            self._answer(request, path, False, 401, {"error": "missing or unknown bearer token"})
            return
        if path.startswith("/arm/"):
            self._answer_arm(request, path)
            return
        prefix = self._workspace_prefix(path)
        if prefix is None:
            self._answer(request, path, True, 404, {"error": f"not a workspace path: {path}"})
            return
        rest = path[len(prefix) :]
        if rest.startswith("/api/2.0/mlflow/runs/log-batch") and self._take_throttle():
            self._answer(
                request,
                path,
                True,
                429,
                {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "throttled"},
                {"Retry-After": "1"},
            )
            return
        self._forward(request, path, rest, body)

    def _workspace_prefix(self, path: str) -> str | None:
        for version in ("/mlflow/v2.0", "/mlflow/v1.0"):
            prefix = version + self.workspace_path
            if path.startswith(prefix + "/"):
                return prefix
        return None

    def _take_throttle(self) -> bool:
        with self._lock:
            if self.throttle_log_batch > 0:
                self.throttle_log_batch -= 1
                return True
            return False

    def _forward(self, request: BaseHTTPRequestHandler, path: str, rest: str, body: bytes) -> None:
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        upstream = urllib.request.Request(
            self.upstream + rest,
            data=body if request.command != "GET" else None,
            method=request.command,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(upstream, timeout=60) as response:
                status, payload = response.status, response.read()
                kind = response.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
            kind = error.headers.get("Content-Type", "application/json")
        self._record(request.command, path, True, status)
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer_arm(self, request: BaseHTTPRequestHandler, path: str) -> None:
        """Azure Resource Manager's "get workspace": the workspace's tracking URI."""
        if path.split("?", 1)[0] != "/arm" + self.workspace_path:
            self._answer(request, path, True, 404, {"error": "no such workspace"})
            return
        body = {"location": "loopback", "properties": {"mlFlowTrackingUri": self.tracking_uri}}
        self._answer(request, path, True, 200, body)

    def _answer(
        self,
        request: BaseHTTPRequestHandler,
        path: str,
        authorized: bool,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        self._record(request.command, path, authorized, status)
        payload = json.dumps(body).encode()
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _record(self, method: str, path: str, authorized: bool, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, authorized, status))


def workspace_path(subscription_id: str, resource_group: str, workspace_name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{workspace_name}"
    )


# ---------------------------------------------------------------------------- the guard
def _host_of(address: Any) -> str | None:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None  # a Unix socket path


def refuse_non_loopback(patch: Callable[[Any, str, Any], None] | None = None) -> list[str]:
    """Patch the socket layer so that only 127.0.0.1 can be reached; return the list every
    refused attempt is appended to.

    `patch` is ``monkeypatch.setattr`` in a test (undone afterwards); without it the patch
    lasts for the whole process (for a subprocess started by a test).
    """
    setter = patch or setattr
    refused: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def allowed(host: str | None) -> bool:
        return host is None or host in LOOPBACK

    def connect(self: socket.socket, address: Any) -> None:
        if not allowed(_host_of(address)):
            refused.append(f"connect {address!r}")
            raise ConnectionRefusedError(f"test guard: no connections beyond 127.0.0.1 ({address!r})")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not allowed(_host_of(address)):
            refused.append(f"connect_ex {address!r}")
            return 111  # ECONNREFUSED
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if not allowed(name):
            refused.append(f"getaddrinfo {name!r}")
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no lookup of {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    setter(socket.socket, "connect", connect)
    setter(socket.socket, "connect_ex", connect_ex)
    setter(socket, "getaddrinfo", getaddrinfo)
    return refused
