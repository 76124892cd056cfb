"""Sending to a checked URL, against real servers on loopback (let through by the test
settings' allow-list): the connection goes to the checked address with the original Host
and SNI, the certificate is verified against the original name, a redirect is not
followed, and what is read is bounded in size and time."""

from __future__ import annotations

import pytest

from outbound.errors import OutboundError, UnsafeURL
from outbound.http import request_send
from tests.outbound.servers import Authority, Server


@pytest.fixture
def servers():
    made: list[Server] = []

    def make(**options) -> Server:
        made.append(Server(**options))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.OUTBOUND_ALLOWED_HOSTS = ["localhost", "127.0.0.0/8"]


def test_a_request_goes_to_the_checked_address_with_the_original_host_header(servers):
    server = servers(status=200, body=b"ok")
    response = request_send(method="POST", url=server.url("localhost", "/in?x=1"),
                            content=b'{"a":1}', headers={"X-Event": "e", "Host": "evil"})
    assert (response.status_code, response.content, response.truncated) == (200, b"ok", False)
    assert response.address == "127.0.0.1"
    ((method, path, headers, body),) = server.requests
    assert (method, path, body) == ("POST", "/in?x=1", b'{"a":1}')
    assert headers["Host"] == f"localhost:{server.port}"  # ours, not the caller's
    assert headers["X-Event"] == "e"
    assert headers["Accept-Encoding"] == "identity"


def test_a_refused_url_sends_nothing(servers, settings):
    server = servers()
    settings.OUTBOUND_ALLOWED_HOSTS = []
    with pytest.raises(UnsafeURL) as caught:
        request_send(method="POST", url=server.url(), content=b"{}")
    assert caught.value.code == "URL_NOT_ALLOWED"
    assert server.connections == 0


def test_a_redirect_is_returned_and_not_followed(servers):
    elsewhere = servers(status=200, body=b"internal secrets")
    redirecting = servers(status=302, headers={"Location": elsewhere.url(path="/admin")})
    response = request_send(method="POST", url=redirecting.url(), content=b"{}")
    assert response.status_code == 302
    assert response.headers["Location"] == elsewhere.url(path="/admin")
    assert (redirecting.connections, elsewhere.connections) == (1, 0)


def test_only_so_much_of_a_large_response_is_read(servers):
    server = servers(status=200, body=[b"x" * 65536] * 32)  # 2 MiB
    response = request_send(method="GET", url=server.url(), max_bytes=1000)
    assert (len(response.content), response.truncated) == (1000, True)


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(servers):
    server = servers(status=200, body=[b"x"] * 100, pace_s=0.1)
    with pytest.raises(OutboundError) as caught:
        request_send(method="GET", url=server.url(), timeout_s=1.0)
    assert caught.value.code == "URL_TIMEOUT" and not caught.value.permanent


def test_a_closed_port_is_unreachable(unused_port):
    with pytest.raises(OutboundError) as caught:
        request_send(method="POST", url=f"http://127.0.0.1:{unused_port}/")
    assert caught.value.code == "URL_UNREACHABLE"
    assert "ConnectError" in caught.value.message


def test_https_sends_the_original_name_as_sni_and_verifies_the_certificate_for_it(
        servers, tmp_path):
    authority = Authority(tmp_path)
    server = servers(status=204, tls=authority.server_context("localhost"))
    response = request_send(method="POST", url=server.url("localhost", scheme="https"),
                            content=b"{}", verify=authority.client_context())
    assert (response.status_code, response.address) == (204, "127.0.0.1")
    assert server.server_names == ["localhost"]
    assert server.requests[0][2]["Host"] == f"localhost:{server.port}"


def test_https_refuses_a_certificate_for_another_name(servers, tmp_path):
    authority = Authority(tmp_path)
    # The certificate is good, signed by the trusted authority, but for another host: as
    # a server at a private address answering for a rebinding name would show.
    server = servers(status=204, tls=authority.server_context("elsewhere.test", "127.0.0.1"))
    with pytest.raises(OutboundError) as caught:
        request_send(method="POST", url=server.url("localhost", scheme="https"),
                     content=b"{}", verify=authority.client_context())
    assert caught.value.code == "URL_UNREACHABLE"
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert server.connections == 1 and server.requests == []


def test_https_by_default_trusts_only_public_authorities(servers, tmp_path):
    server = servers(status=204, tls=Authority(tmp_path).server_context("localhost"))
    with pytest.raises(OutboundError, match="CERTIFICATE_VERIFY_FAILED"):
        request_send(method="POST", url=server.url("localhost", scheme="https"))
    assert server.requests == []
