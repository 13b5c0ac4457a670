"""pe_dr.clients.http: the lab transport against a real loopback TLS server; the error mapping."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from labsim.pki import make_ca, make_server_cert
from pe_dr.clients.http import error_message, lab_transport, request_json, safe_url, send
from pe_dr.errors import ApiError, PermanentError, TransientError
from pe_dr.secrets import remember

# --- a loopback HTTPS server for primary.vm, its certificate from a test CA (labsim's) ------------


@dataclass
class TlsLab:
    port: int
    ca_pem: bytes
    other_ca_pem: bytes
    requests: list[tuple[str, str]]  # (path, Host header) as the server saw them


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))  # type: ignore[attr-defined]
        body = b"running"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _TlsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.seen: list[tuple[str, str]] = []

    def get_request(self) -> tuple[socket.socket, object]:
        sock, address = super().get_request()
        sock.settimeout(5)
        # handshake in the handler thread; a failed handshake only ends that request
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are the point of some tests


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsLab]:
    ca_pem, ca_key = make_ca("Puppet CA: primary.vm")
    other_ca_pem, _ = make_ca("Some other CA")
    cert_pem, key_pem = make_server_cert(ca_pem, ca_key, "primary.vm", "127.0.0.1")
    folder: Path = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server = _TlsServer(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield TlsLab(
            port=server.server_address[1],
            ca_pem=ca_pem,
            other_ca_pem=other_ca_pem,
            requests=server.seen,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _get(transport: httpx.BaseTransport, url: str) -> httpx.Response:
    with httpx.Client(transport=transport, timeout=5) as client:
        return send(client, "GET", url, service="status API")


# --- lab_transport ---------------------------------------------------------------------------


def test_mapped_name_reaches_the_lab_address_and_verifies_with_the_lab_ca(tls_lab: TlsLab) -> None:
    transport = lab_transport({"primary.vm": "127.0.0.1"}, tls_lab.ca_pem)
    response = _get(transport, f"https://primary.vm:{tls_lab.port}/status/v1/simple")
    assert response.status_code == 200
    assert response.text == "running"
    assert ("/status/v1/simple", f"primary.vm:{tls_lab.port}") in tls_lab.requests


def test_host_map_names_are_case_insensitive(tls_lab: TlsLab) -> None:
    transport = lab_transport({"PRIMARY.vm": "127.0.0.1"}, tls_lab.ca_pem)
    assert _get(transport, f"https://primary.vm:{tls_lab.port}/").text == "running"


def test_a_ca_that_did_not_sign_the_certificate_is_a_permanent_error(tls_lab: TlsLab) -> None:
    transport = lab_transport({"primary.vm": "127.0.0.1"}, tls_lab.other_ca_pem)
    with pytest.raises(PermanentError) as caught:
        _get(transport, f"https://primary.vm:{tls_lab.port}/")
    message = str(caught.value)
    assert message.startswith(f"TLS verification of primary.vm:{tls_lab.port} failed: ")
    assert "unknown CA" in message
    assert not caught.value.transient


def test_a_name_the_certificate_does_not_cover_fails_verification(tls_lab: TlsLab) -> None:
    transport = lab_transport({"replica.vm": "127.0.0.1"}, tls_lab.ca_pem)
    with pytest.raises(PermanentError) as caught:
        _get(transport, f"https://replica.vm:{tls_lab.port}/")
    assert str(caught.value) == (
        f"TLS verification of replica.vm:{tls_lab.port} failed: "
        "certificate is not valid for 'replica.vm'"
    )


def test_two_names_on_one_address_never_share_a_verified_connection(tls_lab: TlsLab) -> None:
    # httpcore pools by address and port: a connection verified for primary.vm must not carry a
    # request for replica.vm, whose name the certificate does not cover
    both = {"primary.vm": "127.0.0.1", "replica.vm": "127.0.0.1"}
    with httpx.Client(transport=lab_transport(both, tls_lab.ca_pem), timeout=5) as client:
        ok = send(client, "GET", f"https://primary.vm:{tls_lab.port}/", service="status API")
        assert ok.text == "running"
        assert ok.request.url.host == "primary.vm"  # what errors and the journal name
        with pytest.raises(PermanentError, match=r"not valid for 'replica\.vm'"):
            send(client, "GET", f"https://replica.vm:{tls_lab.port}/", service="status API")


def test_connection_refused_is_transient_and_names_the_host() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed now: nothing listens
    transport = lab_transport({"primary.vm": "127.0.0.1"}, None)
    with pytest.raises(TransientError) as caught:
        _get(transport, f"https://primary.vm:{port}/status/v1/simple")
    assert str(caught.value) == f"cannot reach primary.vm:{port}: connection refused"


@pytest.fixture
def plain_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_plain_http_through_the_map(plain_server: http.server.HTTPServer) -> None:
    port = plain_server.server_address[1]
    transport = lab_transport({"gitlab.vm": "127.0.0.1"}, None)
    response = _get(transport, f"http://gitlab.vm:{port}/api/v4/user")
    assert response.text == "running"
    assert plain_server.seen == [("/api/v4/user", f"gitlab.vm:{port}")]  # type: ignore[attr-defined]


def test_unmapped_hosts_resolve_normally(plain_server: http.server.HTTPServer) -> None:
    port = plain_server.server_address[1]
    # "localhost" is not in the map: the system resolver finds the loopback server
    transport = lab_transport({"primary.vm": "192.0.2.1"}, None)
    assert _get(transport, f"http://localhost:{port}/").text == "running"


def test_no_verification_switch_exists_in_the_code_base() -> None:
    root = Path(__file__).resolve().parents[3]
    needle = "verify=" + "False"
    offenders = [
        str(path)
        for folder in ("pe_dr", "sim", "flows", "tasks", "deployments", "tests")
        for path in (root / folder).rglob("*.py")
        if needle in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


# --- send / request_json error mapping ---------------------------------------------------------


def _client(handler: httpx.MockTransport) -> httpx.Client:
    return httpx.Client(transport=handler, timeout=5)


def _answer(status: int, **kw: object) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, **kw))  # type: ignore[arg-type]


def test_request_json_returns_the_parsed_body_and_none_for_no_content() -> None:
    with _client(_answer(200, json={"a": [1, 2]})) as client:
        assert request_json(client, "GET", "https://primary.vm:4433/x", service="S") == {
            "a": [1, 2]
        }
    with _client(_answer(204)) as client:
        assert request_json(client, "POST", "https://primary.vm:4433/x", service="S") is None


def test_a_2xx_body_that_is_not_json_is_a_permanent_error() -> None:
    with _client(_answer(200, text="<html>")) as client, pytest.raises(PermanentError) as caught:
        request_json(client, "GET", "https://primary.vm:4433/x?token=abcdefgh123", service="S")
    assert "abcdefgh123" not in str(caught.value)
    assert "https://primary.vm:4433/x" in str(caught.value)


def test_pe_error_bodies_give_message_and_kind() -> None:
    body = {"kind": "puppetlabs.rbac/user-conflict", "msg": "A user with login 'deploy' exists"}
    with _client(_answer(409, json=body)) as client, pytest.raises(ApiError) as caught:
        send(client, "POST", "https://primary.vm:4433/rbac-api/v1/users", service="RBAC API")
    err = caught.value
    assert (err.status, err.kind, err.service, err.transient) == (
        409,
        "puppetlabs.rbac/user-conflict",
        "RBAC API",
        False,
    )
    assert str(err) == (
        "RBAC API answered HTTP 409: A user with login 'deploy' exists (POST /rbac-api/v1/users)"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"message": "404 Project Not Found"}, "404 Project Not Found"),
        ({"message": {"name": ["has already been taken"]}}, '{"name": ["has already been taken"]}'),
        ({"error": "insufficient_scope"}, "insufficient_scope"),
    ],
)
def test_gitlab_error_bodies(body: dict[str, object], expected: str) -> None:
    response = httpx.Response(400, json=body, request=httpx.Request("GET", "http://gitlab.vm/"))
    assert error_message(response) == (expected, None)


def test_text_error_bodies_and_empty_bodies() -> None:
    request = httpx.Request("GET", "https://primary.vm:8140/status/v1/simple/nope")
    assert error_message(httpx.Response(404, text="not found: nope\n", request=request)) == (
        "not found: nope",
        None,
    )
    assert error_message(httpx.Response(502, request=request)) == ("Bad Gateway", None)


def test_401_says_authentication_failed_and_is_permanent() -> None:
    body = {"kind": "puppetlabs.rbac/token-revoked", "msg": "Token has been revoked."}
    with _client(_answer(401, json=body)) as client, pytest.raises(ApiError) as caught:
        send(client, "GET", "https://primary.vm:4433/rbac-api/v1/users", service="RBAC API")
    assert "authentication failed" in str(caught.value)
    assert "Token has been revoked." in str(caught.value)
    assert not caught.value.transient


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_transient(status: int) -> None:
    with _client(_answer(status, text="busy")) as client, pytest.raises(ApiError) as caught:
        send(client, "GET", "https://primary.vm:4433/x", service="S")
    assert caught.value.transient
    assert caught.value.status == status


def test_accepted_error_statuses_are_returned() -> None:
    with _client(_answer(503, text="error")) as client:
        response = send(client, "GET", "https://primary.vm:8140/x", service="S", accept=(503,))
    assert response.text == "error"


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectTimeout("t"), httpx.ReadTimeout("t"), httpx.PoolTimeout("t")],
)
def test_timeouts_are_transient_and_free_of_query_tokens(exc: httpx.TimeoutException) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    url = "https://primary.vm:8170/code-manager/v1/webhook?type=gitlab&token=s3cr3t-token-1"
    with _client(httpx.MockTransport(fail)) as client, pytest.raises(TransientError) as caught:
        send(client, "POST", url, service="Code Manager")
    message = str(caught.value)
    assert message.startswith("primary.vm:8170 did not answer in time")
    assert "s3cr3t-token-1" not in message
    assert "token=" not in message


def test_protocol_errors_are_transient() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with _client(httpx.MockTransport(fail)) as client, pytest.raises(TransientError) as caught:
        send(client, "GET", "https://primary.vm:8143/orchestrator/v1/jobs/1", service="S")
    assert str(caught.value).startswith("the connection to primary.vm:8143 failed")


def test_remembered_secrets_are_scrubbed_from_error_bodies() -> None:
    secret = remember("0QXaVeryLongRbacToken123")
    body = {"kind": "bad", "msg": f"token {secret} is unknown"}
    with _client(_answer(400, json=body)) as client, pytest.raises(ApiError) as caught:
        send(client, "POST", "https://primary.vm:4433/x", service="S")
    assert secret not in str(caught.value)


def test_safe_url_drops_query_fragment_and_user_info() -> None:
    assert (
        safe_url("https://u:pw@primary.vm:8170/code-manager/v1/webhook?type=gitlab&token=x#f")
        == "https://primary.vm:8170/code-manager/v1/webhook"
    )


def test_one_ssl_context_per_ca_and_process() -> None:
    """Building one parses the CA (the system store: tens of ms); every client built one."""
    from pe_dr.clients.http import lab_ssl_context

    assert lab_ssl_context(None) is lab_ssl_context(None)
    assert lab_ssl_context(None).verify_mode == ssl.CERT_REQUIRED
