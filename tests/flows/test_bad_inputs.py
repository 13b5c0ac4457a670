"""Every bad input is refused before anything starts: one line naming the input and the rule,
exit 2, no vagrant run, no flow run, nothing served."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pe_dr_cli import main as cli
from pe_dr_cli.main import EXIT_USAGE, main

TUTORIAL_HOSTS = [
    ("primary.vm", "primary", "192.168.56.4"),
    ("replica.vm", "replica", "192.168.56.41"),
    ("linux.vm", "agent", "192.168.56.6"),
    ("gitlab.vm", "gitlab", "192.168.56.7"),
]


def spec_text(*, top: str = "", change: dict[str, str] | None = None) -> str:
    """A valid lab spec, with `top` lines first and host `name`'s address replaced."""
    lines = [top] if top else []
    for name, role, address in TUTORIAL_HOSTS:
        address = (change or {}).get(name, address)
        lines += ["[[hosts]]", f'name = "{name}"', f'role = "{role}"', f'address = "{address}"']
    return "\n".join(lines) + "\n"


# (case id, argv after the spec is filled in, spec file text or bytes or None, env, words)
CASES: list[tuple[str, list[str], str | bytes | None, dict[str, str], str]] = [
    # budgets: finite, more than 0, at most days
    ("budget-inf", ["--budget", "rto_seconds=inf"], None, {}, "rto_seconds=inf: must be a finite"),
    ("budget-nan", ["--budget", "rpo_seconds=nan"], None, {}, "rpo_seconds=nan: must be a finite"),
    ("budget-1e308", ["--budget", "rto_seconds=1e308"], None, {}, "at most 7 days"),
    ("budget-8-days", ["--budget", "reprotect_seconds=700000"], None, {}, "at most 7 days"),
    ("budget-negative", ["--budget", "failback_seconds=-5"], None, {}, "more than 0"),
    ("budget-zero", ["--budget", "rto_seconds=0"], None, {}, "more than 0"),
    ("budget-unknown", ["--budget", "speed=5"], None, {}, "NAME one of"),
    ("budget-no-value", ["--budget", "rto_seconds"], None, {}, "expected NAME=SECONDS"),
    ("budget-words", ["--budget", "rto_seconds=soon"], None, {}, "not a number of seconds"),
    # poll interval: at least a fraction of a second, at most a minute
    ("poll-tiny", ["--poll-interval", "0.000001"], None, {}, "--poll-interval 1e-06: must be"),
    ("poll-zero", ["--poll-interval", "0"], None, {}, "at least 0.1"),
    ("poll-inf", ["--poll-interval", "inf"], None, {}, "--poll-interval inf"),
    ("poll-nan", ["--poll-interval", "nan"], None, {}, "--poll-interval nan"),
    ("poll-negative", ["--poll-interval", "-1"], None, {}, "at least 0.1"),
    ("poll-hour", ["--poll-interval", "3600"], None, {}, "at most 60"),
    ("poll-words", ["--poll-interval", "often"], None, {}, "--poll-interval: invalid float"),
    # the spec file itself
    ("spec-empty", [], "", {}, "is empty"),
    ("spec-comments-only", [], "# nothing here\n", {}, "is empty"),
    ("spec-binary", [], b"\x89PNG\r\n\x1a\n\x00\xff\xfe", {}, "is not UTF-8 text"),
    ("spec-not-toml", [], "hosts = [\n", {}, "is not valid TOML"),
    ("spec-unknown-field", [], spec_text(top='colour = "red"'), {}, "colour: Extra inputs"),
    # addresses distinct and routable to a VM
    (
        "agent-primary-address",
        [],
        spec_text(change={"linux.vm": "192.168.56.4"}),
        {},
        "'primary.vm' and 'linux.vm' have the same address",
    ),
    ("address-ipv6-loopback", [], spec_text(change={"linux.vm": "::1"}), {}, "is this machine"),
    ("address-localhost", [], spec_text(change={"gitlab.vm": "127.0.0.1"}), {}, "is this machine"),
    ("address-unspecified", [], spec_text(change={"linux.vm": "0.0.0.0"}), {}, "unspecified"),
    ("address-multicast", [], spec_text(change={"linux.vm": "224.0.0.1"}), {}, "multicast"),
    ("address-link-local", [], spec_text(change={"linux.vm": "169.254.3.4"}), {}, "link-local"),
    ("address-broadcast", [], spec_text(change={"linux.vm": "255.255.255.255"}), {}, "reserved"),
    ("address-class-e", [], spec_text(change={"linux.vm": "240.0.0.9"}), {}, "reserved"),
    ("address-not-ip", [], spec_text(change={"linux.vm": "1.2.3"}), {}, "not an IP address"),
    # names git and PE accept
    ("env-space", [], spec_text(top='environment = "my env"'), {}, "environment: String should"),
    ("env-slash", [], spec_text(top='environment = "feature/x"'), {}, "environment: String"),
    ("env-upper", [], spec_text(top='environment = "Production"'), {}, "environment: String"),
    ("env-dots", [], spec_text(top='environment = "a..b"'), {}, "environment: String"),
    ("env-empty", [], spec_text(top='environment = ""'), {}, "environment: String"),
    ("pe-version", [], spec_text(top='pe_version = "latest"'), {}, "pe_version: String"),
    ("box-space", [], spec_text(top='box = "ubuntu jammy"'), {}, "box: String"),
    ("admin-space", [], spec_text(top='console_admin = "ad min"'), {}, "console_admin: String"),
    ("deploy-newline", [], spec_text(top='deploy_user = "a\\nb"'), {}, "deploy_user: String"),
    ("lab-name-upper", [], spec_text(top='name = "Lab_A"'), {}, "name: String"),
    ("gitlab-port-zero", [], spec_text(top="gitlab_http_port = 0"), {}, "gitlab_http_port"),
    ("control-repo", [], spec_text(top='control_repo = "flat"'), {}, "control_repo: String"),
    ("host-name", [], spec_text().replace("linux.vm", "Linux_VM"), {}, "not a valid host name"),
    ("no-agent", [], spec_text().replace('"agent"', '"gitlab"'), {}, "exactly one gitlab"),
    (
        "vagrant-root-missing",
        [],
        spec_text(top='vagrant_root = "no/such/folder"'),
        {},
        "vagrant_root",
    ),
    # settings from the environment
    ("env-agents-zero", [], None, {"PE_DR_MAX_PARALLEL_AGENTS": "0"}, "PE_DR_MAX_PARALLEL_AGENTS"),
    ("env-grace-inf", [], None, {"PE_DR_STOP_GRACE_SECONDS": "inf"}, "PE_DR_STOP_GRACE_SECONDS"),
    (
        "env-lock-1e308",
        [],
        None,
        {"PE_DR_LAB_LOCK_WAIT_SECONDS": "1e308"},
        "PE_DR_LAB_LOCK_WAIT_SECONDS",
    ),
    ("env-retry-zero", [], None, {"PE_DR_RETRY_DELAY_SCALE": "0"}, "PE_DR_RETRY_DELAY_SCALE"),
    ("env-overdue-zero", [], None, {"PE_DR_OVERDUE_DAYS": "0"}, "PE_DR_OVERDUE_DAYS='0': must be"),
    # secrets without line breaks (the value itself is never shown)
    (
        "secret-newline",
        ["--promote"],
        None,
        {"PE_CONSOLE_PASSWORD": "s3cret-pw\nsecond-line"},
        "the secret 'pe-console-password' (the environment variable PE_CONSOLE_PASSWORD)",
    ),
    (
        "secret-carriage-return",
        ["--promote"],
        None,
        {"PE_CONSOLE_PASSWORD": "s3cret\rpw"},  # (a trailing one is trimmed)
        "contains a line break",
    ),
]

EXTRA = [
    (
        "address-mapped-loopback",
        [],
        spec_text(change={"linux.vm": "::ffff:127.0.0.1"}),
        {},
        "'::ffff:127.0.0.1' is this machine",
    ),
    ("address-v6-unspecified", [], spec_text(change={"linux.vm": "::"}), {}, "unspecified"),
    ("address-v6-multicast", [], spec_text(change={"linux.vm": "ff02::1"}), {}, "multicast"),
    ("address-v6-link-local", [], spec_text(change={"linux.vm": "fe80::1"}), {}, "link-local"),
    (
        "address-mapped-duplicate",
        [],
        spec_text(change={"linux.vm": "::ffff:192.168.56.4"}),
        {},
        "same address",
    ),
    ("host-name-duplicate", [], spec_text().replace("linux.vm", "replica.vm"), {}, "replica.vm"),
    ("env-lock", [], spec_text(top='environment = "x.lock"'), {}, "environment"),
    ("env-dash-start", [], spec_text(top='environment = "-x"'), {}, "environment"),
    (
        "secret-unicode-ls",
        ["--promote"],
        None,
        {"PE_CONSOLE_PASSWORD": "abc\u2028def"},
        "PE_CONSOLE_PASSWORD",
    ),
    ("spec-whitespace", [], "   \n\n", {}, "is empty"),
    ("spec-bom-binary", [], b"\xff\xfe\x00h\x00o", {}, "lab.toml"),
    ("vagrant-root-file", [], spec_text(top='vagrant_root = "/etc/hostname"'), {}, "vagrant_root"),
    ("gitlab-port-huge", [], spec_text(top="gitlab_http_port = 70000"), {}, "gitlab_http_port"),
    (
        "memory-zero",
        [],
        spec_text().replace('role = "agent"', 'role = "agent"\nmemory_mb = 0'),
        {},
        "memory_mb",
    ),
    (
        "cpus-huge",
        [],
        spec_text().replace('role = "agent"', 'role = "agent"\ncpus = 100000'),
        {},
        "cpus",
    ),
    (
        "download-url-http",
        [],
        spec_text(top='pe_download_url = "file:///etc/passwd"'),
        {},
        "pe_download_url",
    ),
    (
        "download-url-newline",
        [],
        spec_text(top='pe_download_url = "https://a/b\\nc"'),
        {},
        "pe_download_url",
    ),
    (
        "stop-grace-negative",
        [],
        None,
        {"PE_DR_STOP_GRACE_SECONDS": "-1"},
        "PE_DR_STOP_GRACE_SECONDS",
    ),
]
CASES += EXTRA


@pytest.fixture
def untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a refused command must never do, recorded: run vagrant (a stand-in on PATH logs
    each call), start a flow run, serve deployments."""
    calls: list[str] = []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "vagrant-calls"
    vagrant = bin_dir / "vagrant"
    vagrant.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    vagrant.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("PE_DR_LAB_SPEC", raising=False)
    monkeypatch.setenv("PE_CONSOLE_PASSWORD", "fine")

    def run_flow(*args: Any, **kwargs: Any) -> int:
        calls.append("flow run")
        return 0

    monkeypatch.setattr(cli, "_run_flow", run_flow)
    monkeypatch.setattr("prefect.serve", lambda *a, **k: calls.append("serve"))
    monkeypatch.setattr(cli, "_vagrant_log", log, raising=False)
    return calls


def _assert_refused(
    argv: list[str], words: str, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert words in lines[0]
    assert "Traceback" not in err
    assert calls == []
    assert not cli._vagrant_log.exists()  # type: ignore[attr-defined]
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "spec", "env", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_bad_drill_input_is_refused_before_anything_starts(
    argv: list[str],
    spec: str | bytes | None,
    env: dict[str, str],
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    untouched: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    file = tmp_path / "lab.toml"
    if spec is None:
        file.write_text(spec_text())
    elif isinstance(spec, bytes):
        file.write_bytes(spec)
    else:
        file.write_text(spec)
    line = _assert_refused(["drill", "--spec", str(file), "--yes", *argv], words, untouched, capsys)
    for value in env.values():
        if "secret" in line:
            assert value.split()[0][:6] not in line  # the secret itself is never shown


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["serve", "--limit", "0"], {}, "--limit: 0 must be between 1 and 1000"),
        (["serve", "--limit", "-3"], {}, "--limit: -3 must be between 1 and 1000"),
        (["serve", "--limit", "many"], {}, "--limit: 'many' is not a whole number"),
        (["serve"], {"PE_DR_DRILL_CRON": "0 3 1 * * *"}, "exactly five fields"),
        (["serve"], {"PE_DR_DRILL_CRON": "every month"}, "exactly five fields"),
        (["serve"], {"PE_DR_DRILL_CRON": "0 3 32 * *"}, "PE_DR_DRILL_CRON='0 3 32 * *'"),
        (["serve"], {"PE_DR_DRILL_TIMEZONE": "Mars/Olympus"}, "PE_DR_DRILL_TIMEZONE"),
        (["reprotect", "--poll-interval", "0", "--yes"], {}, "--poll-interval 0: must be"),
        (["reprotect", "--budget", "reprotect_seconds=inf", "--yes"], {}, "must be a finite"),
        (["history", "--limit", "0"], {}, "--limit 0: must be 1 or more"),
        (
            ["setup", "--notify", "alerts"],
            {"PE_DR_OVERDUE_DAYS": "400"},
            "PE_DR_OVERDUE_DAYS='400': must be a number of days from",
        ),
        (["setup", "--notify", "alerts"], {"PE_DR_OVERDUE_DAYS": "nan"}, "PE_DR_OVERDUE_DAYS"),
        (["history", "--chart", "/tmp"], {}, "--chart /tmp: is a folder"),
        (["history", "--chart", "/tmp/trend.png"], {}, "the chart is SVG; name a .svg file"),
        (["drill", "--yes", "--spec", "/no/such/lab.toml"], {}, "/no/such/lab.toml does not exist"),
        (["drill", "--yes"], {"PE_DR_LAB_SPEC": "/no/such/lab.toml"}, "does not exist"),
    ],
)
def test_a_bad_option_or_setting_elsewhere_is_refused_too(
    argv: list[str],
    env: dict[str, str],
    words: str,
    monkeypatch: pytest.MonkeyPatch,
    untouched: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _assert_refused(argv, words, untouched, capsys)


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_prefect() -> Iterator[str]:
    """A web server on loopback that is not Prefect's API (answers 404 to everything)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("argv", [["drill", "--yes"], ["history"], ["serve"], ["retry", "x"]])
@pytest.mark.parametrize("api", ["dead", "not-prefect"])
def test_a_prefect_api_that_does_not_answer_is_named_with_exit_2(
    argv: list[str],
    api: str,
    not_prefect: str,
    monkeypatch: pytest.MonkeyPatch,
    untouched: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:9/api" if api == "dead" else not_prefect
    monkeypatch.setenv("PREFECT_API_URL", url)
    words = "does not answer" if api == "dead" else "is not a Prefect server's API"
    line = _assert_refused(argv, f"PREFECT_API_URL {url} {words}", untouched, capsys)
    assert "Errno" not in line or "Connection refused" in line


def test_a_six_field_cron_is_refused_without_importing_prefect() -> None:
    """Importing Prefect takes seconds on a loaded machine: the refusal must come before it
    (a stand-in for "in under 2 s" that does not time anything)."""
    import subprocess
    import sys

    code = (
        "import sys; from pe_dr_cli.main import main; rc = main(['serve']); "
        "print(rc, 'prefect' in sys.modules)"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PE_DR_DRILL_CRON": "0 3 1 * * *",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # never reached
        "HOME": str(Path.home()),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert "exactly five fields" in done.stderr
    assert done.stdout.split() == ["2", "False"], done.stdout
