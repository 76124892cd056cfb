"""Sign-In with Ethereum (EIP-4361): reading a signed message and checking what it proves.

Written here rather than taken from the `siwe` package: that package brings its own ABNF
parser and pins of web3's stack, and what we need is small: the message's fixed lines, an
EIP-191 signature recovered with eth-account (which we already use), and checks against
our domain, our chain, the clock and a nonce we issued. Only externally owned accounts
sign in (no EIP-1271 contract wallets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from accounts.errors import SiweError

HEADER = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<domain>[^\s/]+) wants you to "
                    r"sign in with your Ethereum account:$")
FIELDS = {"URI": "uri", "Version": "version", "Chain ID": "chain_id", "Nonce": "nonce",
          "Issued At": "issued_at", "Expiration Time": "expiration_time",
          "Not Before": "not_before", "Request ID": "request_id"}
NONCE = re.compile(r"^[A-Za-z0-9]{8,32}$")
MAX_MESSAGE_CHARS = 4096
# Clocks of browsers and servers disagree a little; more than this is a wrong message.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    statement: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime | None = None
    not_before: datetime | None = None


def _time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SiweError("SIWE_MALFORMED", f"{name} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise SiweError("SIWE_MALFORMED", f"{name} has no time zone")
    return parsed


def siwe_parse(text: str) -> SiweMessage:
    """The fields of an EIP-4361 message; SiweError SIWE_MALFORMED when it is not one."""
    if not isinstance(text, str) or not text or len(text) > MAX_MESSAGE_CHARS:
        raise SiweError("SIWE_MALFORMED", "the message is empty or too long")
    lines = text.split("\n")
    header = HEADER.match(lines[0])
    if header is None or len(lines) < 7:
        raise SiweError("SIWE_MALFORMED", "not a Sign-In with Ethereum message")
    address = lines[1]
    if not is_checksum_address(address):
        raise SiweError("SIWE_MALFORMED", "the address is not an EIP-55 checksummed address")
    try:
        uri_at = next(i for i, line in enumerate(lines) if line.startswith("URI: "))
    except StopIteration:
        raise SiweError("SIWE_MALFORMED", "the message has no URI") from None
    statement = "\n".join(lines[2:uri_at]).strip()
    found: dict[str, str] = {}
    for line in lines[uri_at:]:
        if line == "Resources:" or line.startswith("- "):
            continue
        key, sep, value = line.partition(": ")
        if not sep or key not in FIELDS or FIELDS[key] in found:
            raise SiweError("SIWE_MALFORMED", f"unexpected line {line[:60]!r}")
        found[FIELDS[key]] = value
    for required in ("uri", "version", "chain_id", "nonce", "issued_at"):
        if required not in found:
            raise SiweError("SIWE_MALFORMED", f"the message has no {required}")
    if found["version"] != "1":
        raise SiweError("SIWE_MALFORMED", "only version 1 messages are accepted")
    if not found["chain_id"].isdigit():
        raise SiweError("SIWE_MALFORMED", "the chain id is not a number")
    if not NONCE.match(found["nonce"]):
        raise SiweError("SIWE_MALFORMED", "the nonce is not 8 to 32 letters and digits")
    return SiweMessage(
        domain=header["domain"], address=address, statement=statement, uri=found["uri"],
        version="1", chain_id=int(found["chain_id"]), nonce=found["nonce"],
        issued_at=_time(found["issued_at"], "Issued At"),
        expiration_time=(_time(found["expiration_time"], "Expiration Time")
                         if "expiration_time" in found else None),
        not_before=(_time(found["not_before"], "Not Before")
                    if "not_before" in found else None))


def siwe_check(text: str, signature: str, *, domain: str, chain_id: int, now: datetime,
               max_age: timedelta) -> SiweMessage:
    """The message if it is signed by its address, for `domain` and `chain_id`, and valid
    at `now` (issued within `max_age`); else SiweError with the reason's code. The nonce
    is the caller's to check and spend."""
    message = siwe_parse(text)
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # eth-account raises several types for a malformed signature
        raise SiweError("SIWE_BAD_SIGNATURE", "the signature cannot be read") from None
    if signer != message.address:
        raise SiweError("SIWE_BAD_SIGNATURE", "the message is not signed by its address")
    if message.domain != domain:
        raise SiweError("SIWE_WRONG_DOMAIN", f"the message is for {message.domain}, not "
                        f"{domain}")
    if message.chain_id != chain_id:
        raise SiweError("SIWE_WRONG_CHAIN", f"the message is for chain {message.chain_id}, "
                        f"not {chain_id}")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SiweError("SIWE_EXPIRED", "the message has expired")
    if message.issued_at < now - max_age or message.issued_at > now + CLOCK_SKEW:
        raise SiweError("SIWE_EXPIRED", "the message was issued too long ago, or in the "
                        "future")
    if message.not_before is not None and message.not_before > now + CLOCK_SKEW:
        raise SiweError("SIWE_NOT_YET_VALID", "the message is not valid yet")
    return message


def siwe_message(*, domain: str, address: str, uri: str, chain_id: int, nonce: str,
                 issued_at: datetime, statement: str = "",
                 expiration_time: datetime | None = None) -> str:
    """An EIP-4361 message, as a wallet would be asked to sign it."""
    def stamp(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")

    lines = [f"{domain} wants you to sign in with your Ethereum account:", address, ""]
    if statement:
        lines.append(statement)
    lines += ["", f"URI: {uri}", "Version: 1", f"Chain ID: {chain_id}", f"Nonce: {nonce}",
              f"Issued At: {stamp(issued_at)}"]
    if expiration_time is not None:
        lines.append(f"Expiration Time: {stamp(expiration_time)}")
    return "\n".join(lines)
