"""Sending a request to a URL someone else chose, to the addresses the policy checked.

The connection goes to a checked IP address, never to the name: nothing resolves the name
a second time, so there is no window for a DNS answer to change between the check and the
connection. The request carries the original Host header, and over https the original
host name as SNI, and the certificate is verified against that name (httpcore's
`sni_hostname` request extension sets both the SNI and the name the certificate must
match). A redirect is returned as it is and never followed: its Location is another URL
nobody checked. The response body is read up to a bound, undecoded.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from outbound.errors import OutboundError
from outbound.policy import CheckedURL, url_check

MAX_RESPONSE_BYTES = 64 * 1024
TIMEOUT_S = 10.0


# Loading the trust store takes a while; one context serves every request.
_default_context = functools.cache(httpx.create_ssl_context)


@dataclass(frozen=True)
class OutboundResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes  # at most max_bytes of the body, as sent (not decompressed)
    truncated: bool  # the body went on past max_bytes and was not read
    address: str  # the address we connected to

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _failed(code: str, url: str, exc: Exception) -> OutboundError:
    return OutboundError(code, f"{url!r}: {type(exc).__name__}: {exc}", permanent=False)


def request_send(*, method: str, url: str | CheckedURL, content: bytes = b"",
                 headers: Mapping[str, str] | None = None, timeout_s: float = TIMEOUT_S,
                 max_bytes: int = MAX_RESPONSE_BYTES,
                 verify: ssl.SSLContext | bool = True) -> OutboundResponse:
    """Check `url` (unless it comes checked) and send one request to its addresses, the
    next one only when the one before refused the connection.

    Each step (connect, each read) waits at most `timeout_s`, and reading stops once
    `timeout_s` has passed since the start: the exchange takes less than twice
    `timeout_s`, however slowly the answer comes. Raises UnsafeURL when the policy refuses
    the URL (nothing is sent), OutboundError URL_UNREACHABLE (no address took the
    connection, or TLS failed), URL_TIMEOUT, or URL_REQUEST_FAILED (the answer was not
    HTTP). `verify` is for a private certificate authority; it never turns checks off.
    """
    checked = url if isinstance(url, CheckedURL) else url_check(url)
    deadline = time.monotonic() + timeout_s
    sent_headers = {name: value for name, value in (headers or {}).items()
                    if name.lower() not in {"host", "accept-encoding"}}
    # Undecoded, so the bound on what we read is a bound on what we hold.
    sent_headers.update({"Host": checked.host_header, "Accept-Encoding": "identity"})
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
    last: Exception | None = None
    for address in checked.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        target = httpx.URL(scheme=checked.scheme, host=str(address), port=checked.port,
                           raw_path=checked.target.encode("ascii"))
        # A client of its own for each request: a pooled connection to this address
        # was verified for whichever host name opened it, maybe not this one.
        transport = httpx.HTTPTransport(
            verify=_default_context() if verify is True else verify, retries=0)
        with httpx.Client(transport=transport,
                          follow_redirects=False, trust_env=False) as client:
            request = client.build_request(method, target, content=content,
                                           headers=sent_headers, extensions=extensions,
                                           timeout=httpx.Timeout(remaining))
            try:
                response = client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
                continue
            except httpx.TimeoutException as exc:
                raise _failed("URL_TIMEOUT", checked.url, exc) from exc
            except httpx.HTTPError as exc:
                raise _failed("URL_REQUEST_FAILED", checked.url, exc) from exc
            try:
                body, truncated = _read(response, max_bytes=max_bytes, deadline=deadline)
            except httpx.TimeoutException as exc:
                raise _failed("URL_TIMEOUT", checked.url, exc) from exc
            except httpx.HTTPError as exc:
                raise _failed("URL_REQUEST_FAILED", checked.url, exc) from exc
            finally:
                response.close()
        return OutboundResponse(status_code=response.status_code, headers=response.headers,
                                content=body, truncated=truncated, address=str(address))
    if last is None:
        last = httpx.ConnectTimeout(f"no answer within {timeout_s:g} s")
    raise _failed("URL_UNREACHABLE", checked.url, last) from last


def _read(response: httpx.Response, *, max_bytes: int, deadline: float) -> tuple[bytes, bool]:
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
        # Each read has its own timeout; this bounds a receiver that sends a byte at a
        # time just inside it.
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the response did not end in time")
    return bytes(body), False
