"""SDK-HMAC-SHA256 request signing, exactly as Huawei Cloud's API gateway verifies it.

The algorithm (API_FACTS.md, "AK/SK signing"): a canonical request of six ``\\n``-joined parts
(method, canonical URI, canonical query, canonical headers, signed header names, hex SHA-256 of the
body) is hashed into a string to sign, which is HMAC-SHA256'd with the secret key. The emulator
verifies with the same functions, and ``tests/test_signer.py`` checks them against the published
vectors and, differentially, against the official ``huaweicloudsdkcore`` signer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_UNRESERVED = re.compile(r"[A-Za-z0-9\-_.~]*")
_UNRESERVED_PATH = re.compile(r"[A-Za-z0-9\-_.~/]*")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AK/SK pair and optional security token. ``repr`` and ``str`` never show the values."""

    ak: str = field(repr=False)
    sk: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        token = ", security_token=***" if self.security_token else ""
        return f"Credentials(ak=***, sk=***{token})"

    __str__ = __repr__


def encode(value: str) -> str:
    """Percent-encode everything but ``A-Za-z0-9-_.~``, with uppercase hex (RFC 3986)."""
    if _UNRESERVED.fullmatch(value):
        return value
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """The signed form of a raw (unencoded) path: segments encoded, a trailing ``/`` added."""
    uri = wire_path(path)
    return uri if uri.endswith("/") else uri + "/"


def wire_path(path: str) -> str:
    """The form of a raw path that is sent: segments encoded, no trailing ``/`` added."""
    if _UNRESERVED_PATH.fullmatch(path):
        return path  # the usual case: validated IDs need no encoding
    return "/".join(encode(segment) for segment in path.split("/"))


def canonical_query(pairs: Collection[tuple[str, str]]) -> str:
    """Pairs sorted by key then value (as the SDK sorts them), each side encoded, ``&``-joined.

    The same string is sent as the URL's query, so the server sees exactly what was signed.
    """
    if not pairs:
        return ""  # every DELETE: no query
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(pairs))


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Lowercase, sorted names of the headers to sign; like the SDK, names with ``_`` are not."""
    return sorted(name.lower() for name in headers if "_" not in name)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
) -> str:
    """The six-part canonical request; ``query`` is already canonical, ``path`` is raw."""
    lowered = {name.lower(): str(value).strip() for name, value in headers.items()}
    header_block = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
    return "\n".join(
        (method.upper(), canonical_uri(path), query, header_block, ";".join(signed), body_hash)
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.digest(secret_key.encode(), to_sign.encode(), "sha256").hex()


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """Split an ``Authorization`` header into (access key, signed names, signature), or None."""
    prefix = ALGORITHM + " "
    if not value.startswith(prefix):
        return None
    parts: dict[str, str] = {}
    for item in value[len(prefix) :].split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    try:
        return parts["Access"], parts["SignedHeaders"].split(";"), parts["Signature"]
    except KeyError:
        return None


class Signer:
    """Signs requests with one set of credentials. Holds the secret; ``repr`` hides it."""

    __slots__ = (
        "_auth_prefix",
        "_credentials",
        "_date_cache",
        "_json_names",
        "_mac",
        "_token_line",
    )

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._date_cache: tuple[int, str] = (-1, "")
        # The key's HMAC state, copied per request: half the cost of a one-shot hmac.digest().
        self._mac = hmac.new(credentials.sk.encode(), digestmod=hashlib.sha256)
        self._auth_prefix = f"{ALGORITHM} Access={credentials.ak}, SignedHeaders="
        token = credentials.security_token
        self._token_line = f"x-security-token:{token.strip()}\n" if token else ""
        self._json_names = "content-type;host;x-project-id;x-sdk-date" + (
            ";x-security-token" if token else ""
        )

    def __repr__(self) -> str:
        return f"Signer({self._credentials!r})"

    def sdk_date(self) -> str:
        """The current UTC time in ``X-Sdk-Date`` form, formatted once per second."""
        now = int(time.time())
        if self._date_cache[0] != now:
            self._date_cache = (now, time.strftime(DATE_FORMAT, time.gmtime(now)))
        return self._date_cache[1]

    def sign(
        self,
        method: str,
        host: str,
        path: str,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        sdk_date: str | None = None,
    ) -> dict[str, str]:
        """Return every header to send: ``headers`` plus X-Sdk-Date, Host, token, Authorization.

        ``path`` is raw (unencoded; send ``wire_path(path)``), ``query`` is canonical (send it
        as is). Headers already present win over the defaults, as in the SDK.
        """
        out = {"X-Sdk-Date": sdk_date or self.sdk_date(), "Host": host}
        if self._credentials.security_token:
            out["X-Security-Token"] = self._credentials.security_token
        if headers:
            present = {name.lower() for name in headers}
            out = {k: v for k, v in out.items() if k.lower() not in present}
            out.update(headers)
        signed = signed_header_names(out)
        canonical = canonical_request(method, path, query, out, signed, body)
        sig = signature(self._credentials.sk, string_to_sign(canonical, out_date(out)))
        out["Authorization"] = (
            f"{ALGORITHM} Access={self._credentials.ak}, "
            f"SignedHeaders={';'.join(signed)}, Signature={sig}"
        )
        return out

    def sign_json(
        self,
        method: str,
        host: str,
        path: str,
        query: str,
        project_id: str,
        body: bytes = b"",
        sdk_date: str | None = None,
    ) -> dict[str, str]:
        """The hot path of this API's requests: exactly ``sign()`` with the headers
        ``Content-Type: application/json;charset=UTF-8`` and ``X-Project-Id`` (a test holds the
        two equal), with the canonical request built in one step instead of generically."""
        date = sdk_date or self.sdk_date()
        body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256
        names = self._json_names
        canonical = (
            f"{method.upper()}\n{canonical_uri(path)}\n{query}\n"
            f"content-type:{JSON_CONTENT_TYPE}\nhost:{host.strip()}\n"
            f"x-project-id:{project_id.strip()}\nx-sdk-date:{date.strip()}\n{self._token_line}\n"
            f"{names}\n{body_hash}"
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        mac = self._mac.copy()
        mac.update(f"{ALGORITHM}\n{date}\n{digest}".encode())
        sig = mac.hexdigest()
        out = {"X-Sdk-Date": date, "Host": host}
        if self._token_line:
            out["X-Security-Token"] = self._credentials.security_token or ""
        out["Content-Type"] = JSON_CONTENT_TYPE
        out["X-Project-Id"] = project_id
        out["Authorization"] = f"{self._auth_prefix}{names}, Signature={sig}"
        return out


def out_date(headers: Mapping[str, str]) -> str:
    """The ``X-Sdk-Date`` value among ``headers``, whatever its case (empty when missing)."""
    for name, value in headers.items():
        if name.lower() == "x-sdk-date":
            return value
    return ""
