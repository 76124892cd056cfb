"""Money in and out, in the browser: "Add funds" (a deposit from the injected wallet, or by
hand with a QR code, and its progress until it is credited), linked wallets, withdrawals
and their history, and test ether on the devnet."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import segno
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import funds, selectors, services
from accounts.errors import BillingError
from accounts.models import PayoutState, WalletLink
from marketplace import funds as chain_funds
from marketplace.chain.connect import web3
from marketplace.chain.devnet import CHAIN_ID as DEVNET_CHAIN_ID
from marketplace.chain.errors import ChainError
from marketplace.queue import enqueue

WEI_PER_ETH = Decimal(10**18)
MAX_ETH = Decimal(10**9)  # more ether than there is: a typed amount past it is a typo
TX_HASH_CHARS = 66


def wei_from_eth(text: str) -> int | None:
    """An amount typed in ether, as wei; None when it is not a positive amount with at most
    18 decimals, up to MAX_ETH."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        return None
    wei = value * WEI_PER_ETH
    if not value.is_finite() or not 0 < value <= MAX_ETH or wei != wei.to_integral_value():
        return None
    return int(wei)


def explorer_url(tx_hash: str) -> str:
    template = settings.FUNDS_EXPLORER_TX_URL
    return template.replace("{tx}", tx_hash) if template and tx_hash else ""


def _context(request) -> dict:
    account = services.account_get_or_create(request.user)
    deployment = chain_funds.deployment_recorded()
    ref = funds.account_deposit_ref(account)
    context = {
        "account": account, "ref": ref, "deployment": deployment,
        "confirmations": settings.FUNDS_CONFIRMATIONS,
        "min_deposit_wei": settings.FUNDS_DEPOSIT_MIN_WEI,
        "devnet": settings.FUNDS_CHAIN_ID == DEVNET_CHAIN_ID,
        "chain_id": settings.FUNDS_CHAIN_ID,
        "faucet_wei": settings.FUNDS_FAUCET_WEI,
        "wallets": list(WalletLink.objects.filter(user=request.user)),
        "deposits": [(d, explorer_url(d.tx_hash))
                     for d in selectors.deposits_for_account(account=account)],
        "payouts": [(p, explorer_url(p.tx_hash))
                    for p in selectors.payouts_for_account(account=account)],
        "limits": {"daily": settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI,
                   "approval": settings.FUNDS_WITHDRAWAL_APPROVAL_WEI,
                   "min": settings.FUNDS_WITHDRAWAL_MIN_WEI},
    }
    if deployment is not None:
        uri = chain_funds.payment_uri(deployment, ref)
        context.update(call_data=chain_funds.deposit_call_data(ref), payment_uri=uri,
                       qr_svg=segno.make(uri, error="m").svg_inline(scale=3))
    return context


@login_required
def add_funds(request):
    return render(request, "writer/funds.html", _context(request))


@require_GET
@login_required
async def deposit_progress(request):
    """The progress of the deposit transaction `tx`, polled by the page until it is
    credited (htmx stops polling when the fragment has no trigger)."""
    tx_hash = request.GET.get("tx", "")
    if (len(tx_hash) != TX_HASH_CHARS or not tx_hash.startswith("0x")
            or any(c not in "0123456789abcdefABCDEF" for c in tx_hash[2:])):
        return HttpResponseBadRequest("tx must be a transaction hash (0x and 64 hex digits)")
    account = await sync_to_async(services.account_get_or_create)(request.user)
    try:
        async with chain_funds.reader() as chain:
            progress = await chain_funds.deposit_progress(chain, tx_hash)
    except ChainError:
        progress = None
    return await sync_to_async(render)(request, "writer/_deposit_progress.html", {
        "tx": tx_hash, "progress": progress, "account": account,
        "link": explorer_url(tx_hash)})


@require_POST
@login_required
def withdraw(request):
    account = services.account_get_or_create(request.user)
    amount = wei_from_eth(request.POST.get("amount", ""))
    if amount is None:
        messages.error(request, "Give the amount in ETH, more than 0, with at most 18 "
                                "decimals.")
        return redirect("add_funds")
    try:
        with transaction.atomic():
            payout = funds.withdrawal_request(account=account,
                                              to_address=request.POST.get("address", ""),
                                              amount_wei=amount)
            transaction.on_commit(lambda: enqueue("marketplace.tasks.send_payouts"))
    except BillingError as exc:
        messages.error(request, exc.message)
        return redirect("add_funds")
    if payout.state == PayoutState.AWAITING_APPROVAL:
        messages.info(request, "Your withdrawal is above the amount we send without a "
                               "review: it waits for approval, and is sent then.")
    else:
        messages.success(request, "Your withdrawal is on its way.")
    return redirect("add_funds")


@require_POST
@login_required
async def faucet(request):
    """Devnet only: test ether for one of the user's linked wallets (or the address the
    page's wallet gave)."""
    if settings.FUNDS_CHAIN_ID != DEVNET_CHAIN_ID:
        return HttpResponseBadRequest("test ether is given on the local devnet only")
    address = request.POST.get("address", "")
    try:
        address = funds.checksum(address)
        w3 = web3(settings.CHAIN_RPC)
        try:
            await chain_funds.faucet(w3, address, settings.FUNDS_FAUCET_WEI)
        finally:
            await w3.provider.disconnect()
    except BillingError as exc:
        await sync_to_async(messages.error)(request, exc.message)
    except ChainError as exc:
        await sync_to_async(messages.error)(request, f"The devnet did not answer ({exc.code}).")
    else:
        await sync_to_async(messages.success)(
            request, f"Sent {Decimal(settings.FUNDS_FAUCET_WEI) / WEI_PER_ETH} test ETH to "
                     f"{address}.")
    return redirect("add_funds")
