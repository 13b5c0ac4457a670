"""HostCurlTransport: PE's APIs called on a server over SSH with its host certificate (curl)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pe_dr.clients.pe_api import PEClient
from pe_dr.errors import ApiError, CommandFailed, PermanentError, TransientError
from pe_dr.lab.host import CommandResult
from pe_dr.lab.on_host import HostCurlTransport, parse_config_print, parse_curl_include

CERTS = (
    "hostcert = /etc/puppetlabs/puppet/ssl/certs/replica.vm.pem\n"
    "hostprivkey = /etc/puppetlabs/puppet/ssl/private_keys/replica.vm.pem\n"
    "localcacert = /etc/puppetlabs/puppet/ssl/certs/ca.pem\n"
)
CONFIG_PRINT = ["puppet", "config", "print", "hostcert", "hostprivkey", "localcacert"]


@dataclass
class StubHost:
    """Answers `puppet config print` with CERTS and every curl line with `curl(argv, stdin)`."""

    curl: Callable[[list[str], Any], tuple[int, str, str]]
    name: str = "replica.vm"
    calls: list[tuple[list[str], bool, Any]] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        root: bool = False,
        stdin: Any = None,
        timeout: float = 600.0,
        ok_codes: Collection[int] = (0,),
    ) -> CommandResult:
        argv = list(argv)
        self.calls.append((argv, root, stdin))
        if argv == CONFIG_PRINT:
            return CommandResult(0, CERTS, "")
        assert argv[0] == "curl", argv
        code, out, err = self.curl(argv, stdin)
        if code not in ok_codes:
            raise CommandFailed(self.name, " ".join(argv), code, out, err)
        return CommandResult(code, out, err)

    def curls(self) -> list[tuple[list[str], bool, Any]]:
        return [c for c in self.calls if c[0][0] == "curl"]


def _client(host: StubHost, token: str | None = None) -> PEClient:
    transport = HostCurlTransport(host, "192.168.50.41")  # type: ignore[arg-type]
    return PEClient("replica.vm", host_map={}, ca_pem=None, token=token, transport=transport)


def _answer(status: str, body: str, *headers: str) -> Callable[[list[str], Any], tuple]:
    text = "\r\n".join([f"HTTP/1.1 {status}", *headers, "", body])
    return lambda argv, stdin: (0, text, "")


def test_config_print_reads_both_forms() -> None:
    assert parse_config_print(CERTS, ("hostcert", "hostprivkey", "localcacert")) == {
        "hostcert": "/etc/puppetlabs/puppet/ssl/certs/replica.vm.pem",
        "hostprivkey": "/etc/puppetlabs/puppet/ssl/private_keys/replica.vm.pem",
        "localcacert": "/etc/puppetlabs/puppet/ssl/certs/ca.pem",
    }
    assert parse_config_print("/x/y.pem\n", ("hostcert",)) == {"hostcert": "/x/y.pem"}


def test_include_output_skips_an_interim_answer() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 303 See Other\r\nLocation: /g/1\r\n\r\n"
    status, headers, body = parse_curl_include(raw)
    assert status == 303
    assert ("Location", "/g/1") in headers
    assert body == b""


def test_a_query_runs_curl_as_root_with_the_host_certificate() -> None:
    host = StubHost(_answer("200 OK", '[{"value": "m"}]', "Content-Type: application/json"))
    with _client(host) as pe:
        assert pe.fact("linux.vm", "pe_dr_marker") == [{"value": "m"}]
    (argv, root, stdin), *more = host.curls()
    assert root and stdin is None and not more
    assert argv[argv.index("--cert") + 1].endswith("certs/replica.vm.pem")
    assert argv[argv.index("--key") + 1].endswith("private_keys/replica.vm.pem")
    assert argv[argv.index("--cacert") + 1].endswith("certs/ca.pem")
    assert argv[argv.index("--resolve") + 1] == "replica.vm:8081:192.168.50.41"
    assert argv[argv.index("--request") + 1] == "GET"
    assert argv[-1].startswith("https://replica.vm:8081/pdb/query/v4/facts?query=")


def test_the_certificate_files_are_looked_up_once() -> None:
    host = StubHost(_answer("200 OK", "[]"))
    with _client(host) as pe:
        pe.groups()
        pe.roles()
    assert sum(1 for c in host.calls if c[0] == CONFIG_PRINT) == 1
    assert len(host.curls()) == 2


def test_a_body_goes_on_stdin_and_a_303_location_is_read() -> None:
    host = StubHost(_answer("303 See Other", "", "Location: /classifier-api/v1/groups/abc"))
    with _client(host) as pe:
        assert pe.create_group({"name": "pe-dr-group"}) == "abc"
    argv, _, stdin = host.curls()[0]
    assert argv[argv.index("--data-binary") + 1] == "@-"
    assert b"pe-dr-group" in stdin
    assert not any("pe-dr-group" in a for a in argv)  # the body is never on the command line


def test_an_error_answer_keeps_its_status_and_kind() -> None:
    body = '{"kind": "puppetlabs.classifier/read-only", "msg": "read-only replica"}'
    host = StubHost(_answer("403 Forbidden", body, "Content-Type: application/json"))
    with _client(host) as pe, pytest.raises(ApiError) as caught:
        pe.update_group("abc", {"variables": {"x": 1}})
    assert caught.value.status == 403
    assert caught.value.kind == "puppetlabs.classifier/read-only"


def test_a_token_never_reaches_the_command_line() -> None:
    host = StubHost(_answer("200 OK", "[]"))
    with _client(host, token="0secret-token-value") as pe, pytest.raises(PermanentError):
        pe.groups()
    assert not host.curls()


@pytest.mark.parametrize(
    ("code", "stderr", "error", "words"),
    [
        (7, "curl: (7) Failed to connect to replica.vm port 8081: Connection refused",
         TransientError, "connection refused"),
        (28, "curl: (28) Operation timed out after 30001 milliseconds", TransientError, "in time"),
        (60, "curl: (60) SSL certificate problem: unable to get local issuer certificate",
         PermanentError, "TLS verification"),
        (35, "curl: (35) error:0A00045C:SSL routines::tlsv13 alert certificate required",
         TransientError, "TLS handshake"),
        (58, "curl: (58) unable to set private key file", PermanentError, "host certificate"),
        (127, "-bash: line 1: curl: command not found", PermanentError, "not installed"),
    ],
)  # fmt: skip
def test_curl_failures_map_as_httpx_failures_do(
    code: int, stderr: str, error: type[Exception], words: str
) -> None:
    host = StubHost(lambda argv, stdin: (code, "", stderr))
    with _client(host) as pe, pytest.raises(error) as caught:
        pe.roles()
    assert words in str(caught.value)
