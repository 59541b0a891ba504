"""The one exception tree of the worker.

Third-party errors (aiohttp, sqlite3, pydantic) are translated into these at one boundary each
(``client.py``, ``journal.py``, ``settings.py``) with ``raise ... from exc``; nothing else catches
them. Messages never contain credentials::

    CleanupError
    ├── ConfigError            usage or configuration error (exit 2)
    ├── InputError             an input source cannot be opened or read at all (exit 2)
    ├── TransportError         one request did not get an HTTP answer (retryable)
    │   ├── RequestTimeoutError    the per-request deadline passed
    │   └── HandshakeRefusedError  a TLS handshake no retry mends: the run stops (exit 3)
    │       ├── UntrustedCertificateError  the certificate does not verify
    │       └── TlsMismatchError           no TLS at the address, or none in common
    ├── JournalError           the journal cannot be read or written (not opened: ConfigError)
    ├── OutputError            the outcomes file cannot be written (disk full, I/O error)
    └── AbortRun               the run must stop sending now (exit 3)
"""

from __future__ import annotations

from typing import ClassVar


class CleanupError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(CleanupError):
    """A setting is invalid; the message names the setting and the rule."""


class InputError(CleanupError):
    """An input cannot be opened or decoded as a whole (single bad lines are outcomes instead)."""


class TransportError(CleanupError):
    """A request got no HTTP answer: connection refused or reset, TLS failure, timeout."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class HandshakeRefusedError(TransportError):
    """The TLS handshake failed in a way no retry changes: no request was sent, and none will
    get through until the setup changes. ``abort`` is the run's stop reason."""

    abort: ClassVar[str]


class UntrustedCertificateError(HandshakeRefusedError):
    """The endpoint's TLS certificate failed verification (a TLS-inspecting proxy, a wrong
    endpoint): nothing gets through until the trust store changes."""

    abort = "tls_untrusted"


class TlsMismatchError(HandshakeRefusedError):
    """The endpoint does not speak TLS at that address (an ``http://`` one given as
    ``https://``), or shares no TLS version or cipher with this client."""

    abort = "tls_mismatch"


class RequestTimeoutError(TransportError):
    """The per-request deadline passed before the full answer arrived."""


class JournalError(CleanupError):
    """The journal database cannot be read or written. One that cannot be opened, before
    anything is sent, is a ``ConfigError``."""


class OutputError(CleanupError):
    """The outcomes file cannot be written; the journal still holds every outcome."""


class AbortRun(CleanupError):  # noqa: N818 - it is a control signal, not an error in the code
    """The run must stop sending at once: credentials refused, breaker open, guard tripped."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
