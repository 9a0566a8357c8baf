import pytest

from sdcadm.agent.api import HttpError, authorized, needs_auth, route

UUID = "0000abcd-0000-0000-0000-000000000001"


@pytest.mark.parametrize("header, ok", [
    ("Bearer s3cret", True),
    ("bearer s3cret", True),
    ("Bearer  s3cret ", True),
    ("Bearer s3cre", False),
    ("Bearer s3cretx", False),
    ("Basic s3cret", False),
    ("s3cret", False),
    ("Bearer", False),
    ("", False),
    (None, False),
])
def test_bearer_token(header, ok):
    assert authorized(header, "s3cret") is ok


def test_an_empty_token_never_authorizes():
    assert not authorized("Bearer ", "")
    assert not authorized("Bearer x", "")


def test_non_ascii_header_is_refused_not_crashing():
    assert not authorized("Bearer sécret", "s3cret")


@pytest.mark.parametrize("path, ok", [("/v1/ping", True), ("/v1", True), ("/v1/x/y", True),
                                      ("/metrics", False), ("/v10/ping", False), ("/", False)])
def test_what_needs_auth(path, ok):
    assert needs_auth(path) is ok


def test_routes():
    assert route("GET", "/v1/ping") == ("ping", {})
    assert route("GET", "/v1/instances") == ("instances", {})
    assert route("HEAD", "/v1/status") == ("status", {})
    assert route("POST", f"/v1/instances/{UUID}/restart") == ("restart", {"uuid": UUID})
    assert route("GET", "/metrics") == ("metrics", {})
    assert route("GET", f"/v1/images/{UUID}/file") == ("image_file", {"uuid": UUID})


@pytest.mark.parametrize("path", [
    "/v1/images/../../etc/passwd/file", f"/v1/images/{UUID}/../../token/file",
    f"/v1/images/{UUID.upper()}/file", "/v1/images/%2e%2e%2fetc/file", f"/v1/images/{UUID}",
])
def test_an_image_is_named_only_by_its_uuid(path):
    with pytest.raises(HttpError) as e:
        route("GET", path)
    assert e.value.status == 404


def test_unknown_path_is_404_and_wrong_method_405():
    with pytest.raises(HttpError) as e:
        route("GET", "/v1/nope")
    assert e.value.status == 404
    with pytest.raises(HttpError) as e:
        route("POST", f"/v1/instances/{UUID.upper()}/restart")
    assert e.value.status == 404
    with pytest.raises(HttpError) as e:
        route("DELETE", "/v1/instances")
    assert (e.value.status, e.value.headers) == (405, {"Allow": "GET"})
    with pytest.raises(HttpError) as e:
        route("GET", f"/v1/instances/{UUID}/restart")
    assert e.value.status == 405
