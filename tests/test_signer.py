"""The signer against the SDKs' published vectors and, differentially, the official SDK signer."""

from __future__ import annotations

import string
from urllib.parse import quote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer as SdkSigner
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.signer import (
    JSON_CONTENT_TYPE,
    Credentials,
    Signer,
    canonical_query,
    parse_authorization,
)


def test_vector_my_ak() -> None:
    """The huaweicloudsdkcore test vector: GET /resources?size=1 signed at 20200608T023900Z."""
    headers = Signer(Credentials("my ak", "my sk")).sign(
        "GET",
        "service.endpoint.myhuaweicloud.com",
        "/resources",
        canonical_query([("size", "1")]),
        sdk_date="20200608T023900Z",
    )
    assert headers["Authorization"] == (
        "SDK-HMAC-SHA256 Access=my ak, SignedHeaders=host;x-sdk-date, "
        "Signature=6d5bc610d3d4475346aae5cd7ed8d99585e60c0430a1d3d6e2f54e2bdd633701"
    )


def test_vector_accesskey_signing_only_date() -> None:
    """The Go SDK vector: only x-sdk-date signed (Host given as a name with '_' is unsigned)."""
    from worker.signer import canonical_request, signature, string_to_sign

    canonical = canonical_request(
        "GET",
        "/path",
        canonical_query([("limit", "1")]),
        {"X-Sdk-Date": "20060102T150405Z"},
        ["x-sdk-date"],
        b"",
    )
    sig = signature("SecretKey", string_to_sign(canonical, "20060102T150405Z"))
    assert sig == "5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624"


def test_credentials_never_shown() -> None:
    """repr/str of credentials and signer show no key material."""
    creds = Credentials("AKVALUE123", "SKVALUE456", "TOKENVALUE789")
    for text in (repr(creds), str(creds), repr(Signer(creds))):
        assert "AKVALUE123" not in text
        assert "SKVALUE456" not in text
        assert "TOKENVALUE789" not in text


def test_parse_authorization_round_trip() -> None:
    """The emulator can read back what the signer wrote."""
    headers = Signer(Credentials("ak1", "sk1")).sign("DELETE", "h", "/v2/p/tasks/t")
    parsed = parse_authorization(headers["Authorization"])
    assert parsed is not None
    assert parsed[0] == "ak1"
    assert parsed[1] == ["host", "x-sdk-date"]


_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=12
)
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=10)
_header_name = st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=12).filter(
    lambda n: n.lower() not in {"host", "x-sdk-date", "authorization", "content-type"}
)
_header_value = st.text(alphabet=string.printable.strip() + " ", max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
    segments=st.lists(_segment, min_size=1, max_size=5),
    trailing=st.booleans(),
    query=st.lists(st.tuples(_text, _text), max_size=4),
    headers=st.dictionaries(_header_name, _header_value, max_size=4),
    body=st.binary(max_size=64),
    ak=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20),
    sk=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=40),
)
def test_matches_official_sdk_signer(
    method: str,
    segments: list[str],
    trailing: bool,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    ak: str,
    sk: str,
) -> None:
    """Same Authorization as huaweicloudsdkcore for generated paths, queries, headers, bodies."""
    raw_path = "/" + "/".join(segments) + ("/" if trailing else "")
    # Header names differing only in case would collide in both signers' maps.
    headers = {k.lower(): v for k, v in headers.items()}
    date = "20240102T030405Z"
    common = {"X-Sdk-Date": date, "Content-Type": "application/json", **headers}
    sdk_request = SdkRequest(
        method=method,
        schema="https",
        host="dcs.cn-north-4.myhuaweicloud.com",
        resource_path="/"
        + "/".join(quote(s, safe="") for s in segments)
        + ("/" if trailing else ""),
        query_params=list(query),
        header_params=dict(common),
        body=body,
    )
    expected = SdkSigner(BasicCredentials(ak, sk)).sign(sdk_request).header_params["Authorization"]
    ours = Signer(Credentials(ak, sk)).sign(
        method,
        "dcs.cn-north-4.myhuaweicloud.com",
        raw_path,
        canonical_query(query),
        dict(common),
        body,
    )
    assert ours["Authorization"] == expected


_id = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=64)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "DELETE"]),
    project=_id,
    task=_id,
    query=st.lists(st.tuples(_text, _text), max_size=3),
    body=st.binary(max_size=64),
    sk=st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=40),
)
def test_json_fast_path_matches_official_sdk_signer(
    method: str, project: str, task: str, query: list[tuple[str, str]], body: bytes, sk: str
) -> None:
    """The client's hot path (``sign_json``) signs exactly as huaweicloudsdkcore does."""
    date = "20261127T010203Z"
    path = f"/v2/{project}/tasks/{task}"
    sdk_request = SdkRequest(
        method=method,
        schema="https",
        host="dcs.ap-southeast-1.myhuaweicloud.com",
        resource_path=path,
        query_params=list(query),
        header_params={
            "X-Sdk-Date": date,
            "Content-Type": JSON_CONTENT_TYPE,
            "X-Project-Id": project,
        },
        body=body,
    )
    expected = SdkSigner(BasicCredentials("AKAK", sk)).sign(sdk_request).header_params
    ours = Signer(Credentials("AKAK", sk)).sign_json(
        method,
        "dcs.ap-southeast-1.myhuaweicloud.com",
        path,
        canonical_query(query),
        project,
        body,
        sdk_date=date,
    )
    assert ours["Authorization"] == expected["Authorization"]
    assert ours["X-Project-Id"] == project
    assert ours["Content-Type"] == JSON_CONTENT_TYPE


@settings(max_examples=100, deadline=None)
@given(project=_id, task=_id, token=st.none() | _id, body=st.binary(max_size=32))
def test_json_fast_path_equals_the_general_signer(
    project: str, task: str, token: str | None, body: bytes
) -> None:
    """Same headers, in the same order, as ``sign()`` given the two JSON-API headers —
    with and without a security token."""
    signer = Signer(Credentials("AKAK", "secret-key", token))
    args = ("DELETE", "127.0.0.1:8080", f"/v2/{project}/tasks/{task}", "")
    general = signer.sign(
        *args,
        {"Content-Type": JSON_CONTENT_TYPE, "X-Project-Id": project},
        body,
        sdk_date="20261127T010203Z",
    )
    fast = signer.sign_json(*args, project, body, sdk_date="20261127T010203Z")
    assert list(fast.items()) == list(general.items())
