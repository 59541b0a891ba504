"""An https endpoint behind an egress proxy: ``HTTPS_PROXY``/``NO_PROXY``, CONNECT, proxy
credentials. The emulator serves TLS with a certificate from a test CA (trustme) that the worker
trusts through ``SSL_CERT_FILE``; the worker runs as its own process, so it loads that CA."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest
import trustme

from tests.conftest import PROJECT, report, run, seed, spawn, write_ids
from worker.cli import main
from worker.emulator import EmulatorServer, EmulatorState
from worker.models import Outcome

PASSWORD = "proxy-pass-Zq81"  # a test value, checked to appear nowhere


class ConnectProxy:
    """A CONNECT-only HTTP proxy on loopback that asks for Basic credentials: it records each
    tunnel's target and Proxy-Authorization, answers 407 to a wrong one, else pipes bytes.
    It serves from an anyio blocking portal (an event loop in a thread of its own)."""

    def __init__(self, user: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.tunnels: list[tuple[str, str | None]] = []
        self.port = 0

    @contextlib.contextmanager
    def serving(self) -> Iterator[ConnectProxy]:
        with anyio.from_thread.start_blocking_portal() as portal:
            server = portal.call(asyncio.start_server, self._tunnel, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            try:
                yield self
            finally:
                portal.call(server.close)  # on the portal's loop: asyncio is not thread-safe

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ")
            fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            auth = next((v for k, v in fields.items() if k.lower() == "proxy-authorization"), None)
            self.tunnels.append((f"{method} {target}", auth))
            if method != "CONNECT" or auth != self.expected:
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b'Proxy-Authenticate: Basic realm="t"\r\nContent-Length: 0\r\n\r\n')
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
def tls_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """The emulator on https://127.0.0.1, its CA trusted by processes started from here."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with EmulatorServer(EmulatorState(), ssl_context=context) as emu:
        yield emu


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _run_through(
    proxy: ConnectProxy,
    userinfo: str,
    emulator: EmulatorServer,
    tasks: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
) -> int:
    """Seed ``tasks``; run the worker (its own process) with HTTPS_PROXY naming ``proxy``."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, tasks))
    with proxy.serving():
        monkeypatch.setenv("HTTPS_PROXY", f"http://{userinfo}127.0.0.1:{proxy.port}")
        child = spawn(emulator, tmp_path, path, "--concurrency", "4", *extra)
        return child.wait(timeout=60)


def test_https_endpoint_goes_through_the_https_proxy_with_its_credentials(
    tls_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY with user:password: every connection is a CONNECT to the endpoint carrying
    the credentials, the tasks are deleted, and the password is in no log, report or outcome."""
    proxy = ConnectProxy("cleanup", PASSWORD)
    code = _run_through(proxy, f"cleanup:{PASSWORD}@", tls_emulator, 40, tmp_path, monkeypatch)
    assert code == 0
    assert tls_emulator.state.remaining() == 0
    assert proxy.tunnels
    assert set(proxy.tunnels) == {(f"CONNECT 127.0.0.1:{tls_emulator.port}", proxy.expected)}
    assert len(proxy.tunnels) <= 4  # connections are kept alive, one per request in flight
    log = tmp_path / "worker.log"
    started = [e for e in _events(log) if e["event"] == "cleanup.run_started"]
    assert started[0]["proxy"] == f"http://127.0.0.1:{proxy.port}"
    for output in (log, tmp_path / "report.json", tmp_path / "outcomes.jsonl"):
        assert PASSWORD not in output.read_text(), output.name
    assert report(tmp_path)["outcomes"]["deleted"] == 40


def test_no_proxy_bypasses_it(
    tls_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY naming the endpoint's host: straight there, the proxy never asked."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    proxy = ConnectProxy("cleanup", PASSWORD)
    assert _run_through(proxy, "", tls_emulator, 10, tmp_path, monkeypatch) == 0
    assert tls_emulator.state.remaining() == 0
    assert proxy.tunnels == []
    started = [e for e in _events(tmp_path / "worker.log") if e["event"] == "cleanup.run_started"]
    assert started[0]["proxy"] is None


def test_a_proxy_refusing_the_credentials_fails_the_tasks_not_the_run(
    tls_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 407 from the proxy is a transport failure, retried then failed (exit 1), named in
    the outcome; the wrong password is not written anywhere either."""
    proxy = ConnectProxy("cleanup", PASSWORD)
    userinfo = f"cleanup:wrong-{PASSWORD}@"
    code = _run_through(
        proxy, userinfo, tls_emulator, 3, tmp_path, monkeypatch, "--max-attempts", "2"
    )
    assert code == 1
    assert tls_emulator.state.requests == 0
    rows = [json.loads(line) for line in (tmp_path / "outcomes.jsonl").read_text().splitlines()]
    assert {r["outcome"] for r in rows} == {"failed"}
    assert all("407" in (r["error_msg"] or "") for r in rows), rows
    for output in (tmp_path / "worker.log", tmp_path / "report.json", tmp_path / "outcomes.jsonl"):
        assert PASSWORD not in output.read_text(), output.name


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("proxy.corp:3128", "proxy.corp:3128"),  # no scheme: every task failed as InvalidURL
        ("socks5://127.0.0.1:1080", "socks5://127.0.0.1:1080"),  # sent CONNECT as http
        (f"https://cleanup:{PASSWORD}@127.0.0.1:1", "https://127.0.0.1:1"),  # ignored: direct
    ],
)
def test_a_proxy_other_than_http_exits_2_before_anything_is_sent(
    value: str,
    shown: str,
    tls_emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only an http:// proxy is spoken to. Another one in HTTPS_PROXY failed every task, or
    (https://) was ignored by aiohttp so the requests went out directly, past the proxy the
    operator named. Exit 2 now, naming it without its password; NO_PROXY still bypasses it."""
    path = write_ids(tmp_path / "ids.txt", seed(tls_emulator, 5))
    monkeypatch.setenv("HTTPS_PROXY", value)
    child = spawn(tls_emulator, tmp_path, path)
    assert child.wait(timeout=60) == 2
    said = (tmp_path / "worker.log").read_text()
    assert f"HTTPS_PROXY {shown!r}: give an http:// proxy" in said
    assert PASSWORD not in said
    assert tls_emulator.state.requests == 0
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert spawn(tls_emulator, tmp_path, path).wait(timeout=60) == 0
    assert tls_emulator.state.remaining() == 0


def stopped_unsent(rep: dict[str, object], reason: str, *said: str) -> None:
    """The report of a run that a handshake stopped: ``reason``, a detail saying each of
    ``said``, its 300 tasks ``not_attempted``, none failed, nothing retried."""
    assert rep["stop_reason"] == reason
    for text in said:
        assert text in str(rep["stop_detail"])
    assert rep["outcomes"] == {**{o.value: 0 for o in Outcome}, "not_attempted": 300}
    assert rep["retries"] == 0


def test_an_untrusted_certificate_stops_the_run_at_once_and_says_what_to_trust(
    tls_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A certificate that does not verify (a TLS-inspecting proxy's, a wrong endpoint's) was
    retried like a network blip: 200 handshakes and 181 retries until the circuit breaker
    opened, 19 tasks ``failed`` with 5 attempts. Nothing can get through until the trust
    store changes, so the first one stops the run (exit 3, ``tls_untrusted``), every task
    ``not_attempted``, and the detail names SSL_CERT_FILE. With the CA trusted, the same
    command and journal delete them all."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    trusted = tmp_path / "ca.pem"
    ids = write_ids(tmp_path / "ids.txt", seed(tls_emulator, 300))
    args = ("--concurrency", "8", "--journal", str(tmp_path / "j.sqlite"))

    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    assert spawn(tls_emulator, tmp_path, ids, *args).wait(timeout=60) == 3
    first = report(tmp_path)
    stopped_unsent(first, "tls_untrusted", "CERTIFICATE_VERIFY_FAILED", "SSL_CERT_FILE")
    assert first["requests"] <= 8  # the handshakes in flight when the first failed
    assert tls_emulator.state.requests == 0

    monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
    assert spawn(tls_emulator, tmp_path, ids, *args).wait(timeout=60) == 0
    assert tls_emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 300


def test_https_given_for_an_http_endpoint_stops_at_the_first_handshake(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``https://`` for an endpoint that speaks plain HTTP (the emulator, a local gateway): the
    handshake gets no TLS back, and no retry changes that. It was retried like a network blip,
    200 handshakes until the circuit breaker opened and 19 tasks ``failed``. Now the first one
    stops the run (exit 3, ``tls_mismatch``, every task ``not_attempted``) and asks whether the
    address is http://; ``list`` stops on the first page's. With http:// the same journal runs
    them all."""
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 300))
    https = emulator.url.replace("http://", "https://")
    journal = ("--concurrency", "8", "--journal", str(tmp_path / "j.sqlite"))
    assert run(emulator, tmp_path, ids, *journal, "--endpoint", https) == 3
    first = report(tmp_path)
    stopped_unsent(
        first, "tls_mismatch", "WRONG_VERSION_NUMBER", "is it an http:// address given as https://?"
    )
    assert emulator.state.remaining() == 300

    capsys.readouterr()
    listed = tmp_path / "listed.txt"
    listing = ["list", "--endpoint", https, "--project-id", PROJECT, "--output", str(listed)]
    assert main([*listing, "--log-format", "json"]) == 3
    said = capsys.readouterr().err
    assert "is it an http:// address given as https://? (after 1 attempt(s))" in said
    assert "cleanup.list_retry" not in said
    assert not listed.exists()

    assert run(emulator, tmp_path, ids, *journal) == 0
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 300
