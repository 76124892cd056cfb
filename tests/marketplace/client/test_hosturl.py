"""Where a host may be reached: over TLS only when the settings require it, loopback and
the operator's own hosts excepted."""

from __future__ import annotations

import pytest

from marketplace.client.errors import ClientError
from marketplace.client.hosturl import host_url_check


@pytest.mark.parametrize("url", ["http://hosts.example.org:9101", "ws://93.184.215.14:9101",
                                 "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:9101"])
async def test_a_host_outside_loopback_is_refused_in_clear_when_tls_is_required(settings, url):
    settings.MARKETPLACE_REQUIRE_TLS = True
    with pytest.raises(ClientError) as refused:
        await host_url_check(url)
    assert (refused.value.code, refused.value.permanent) == ("HOST_TLS_REQUIRED", False)


@pytest.mark.parametrize(("url", "base"), [
    ("http://127.0.0.1:9101", "http://127.0.0.1:9101"),
    ("ws://localhost:9101/", "http://localhost:9101"),
    ("wss://127.0.0.1:9101", "https://127.0.0.1:9101"),
])
async def test_loopback_and_tls_urls_pass_when_tls_is_required(settings, url, base):
    settings.MARKETPLACE_REQUIRE_TLS = True
    assert await host_url_check(url) == base


async def test_a_host_in_clear_passes_when_tls_is_not_required(settings):
    settings.MARKETPLACE_REQUIRE_TLS = False
    assert await host_url_check("http://127.0.0.1:9101") == "http://127.0.0.1:9101"


async def test_the_operators_own_hosts_by_name_pass_in_clear_when_tls_is_required(settings):
    settings.MARKETPLACE_REQUIRE_TLS = True
    pod = "http://host-0.host.inkmarket.svc:9000"
    settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = ["10.0.0.0/8"]  # a network is not a name
    with pytest.raises(ClientError) as refused:
        await host_url_check(pod)
    assert refused.value.code == "HOST_TLS_REQUIRED"
    settings.MARKETPLACE_ALLOWED_HOST_NETWORKS = ["host-0.host.inkmarket.svc"]
    with pytest.raises(ClientError) as refused:
        await host_url_check(pod)
    # Past the TLS rule: the name does not resolve outside the cluster.
    assert refused.value.code == "HOST_UNAVAILABLE"
