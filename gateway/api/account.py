"""The caller's money: GET /v1/account, GET /v1/account/deposits, POST and GET
/v1/withdrawals. Reading needs the usage:read scope; withdrawing needs funds:withdraw."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from accounts import funds, selectors, services
from accounts.models import Scope, User
from gateway.api.auth import KEY_AUTH, require_scope
from gateway.api.errors import error_responses
from gateway.api.schemas import Wei
from gateway.db import db
from marketplace import funds as chain_funds
from marketplace.queue import enqueue

router = Router(tags=["account"], auth=KEY_AUTH)
MAX_WITHDRAWAL_DIGITS = 40  # 10^40 wei is far past all the ether there is


class AccountOut(Schema):
    balance: Wei = Field(description="Available to spend or withdraw")
    held: Wei = Field(description="Held by running requests")
    deposit_contract: str | None = Field(
        description="The DepositBox: call deposit(reference) on it with the ether to add; "
        "null when none is deployed")
    deposit_reference: str = Field(description="bytes32 naming this account, 0x + 64 hex")
    chain_id: int
    confirmations_needed: int = Field(description="Confirmations before a deposit counts")


class DepositOut(Schema):
    tx_hash: str
    log_index: int
    block_number: int
    amount: Wei
    sender: str
    state: str = Field(description="credited (deposits of this account are credited)")
    below_minimum: bool
    created_at: datetime


class WithdrawalIn(Schema):
    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="A wallet linked to "
                         "the account (Sign-In with Ethereum on the Add funds page), else 400 "
                         "UNLINKED_ADDRESS; a wrong EIP-55 checksum is 400 INVALID_ADDRESS")
    amount: str = Field(pattern=rf"^[1-9][0-9]{{0,{MAX_WITHDRAWAL_DIGITS - 1}}}$",
                        description="wei, as a decimal string; more than the balance is a "
                        "402 INSUFFICIENT_FUNDS, less than FUNDS_WITHDRAWAL_MIN_WEI a 400 "
                        "WITHDRAWAL_TOO_SMALL")


class WithdrawalOut(Schema):
    id: str = Field(description="The payment id the deposit box pays once")
    address: str
    amount: Wei
    state: str = Field(description="awaiting_approval, queued, sending, sent, failed "
                       "(refunded) or rejected (refunded)")
    tx_hash: str | None
    created_at: datetime
    sent_at: datetime | None


class ListQuery(Schema):
    limit: int = Field(50, ge=1, le=200)


def _withdrawal(payout) -> WithdrawalOut:
    return WithdrawalOut(id=payout.payment_id, address=payout.to_address,
                         amount=str(payout.amount_wei), state=payout.state,
                         tx_hash=payout.tx_hash or None, created_at=payout.created_at,
                         sent_at=payout.sent_at)


def _account(user_id: int) -> AccountOut:
    account = services.account_get_or_create(User.objects.get(pk=user_id))
    deployment = chain_funds.deployment_recorded()
    return AccountOut(balance=str(account.balance_wei), held=str(account.held_wei),
                      deposit_contract=deployment.deposits if deployment else None,
                      deposit_reference=funds.account_deposit_ref(account),
                      chain_id=settings.FUNDS_CHAIN_ID,
                      confirmations_needed=settings.FUNDS_CONFIRMATIONS)


@router.get("/account", response={200: AccountOut, **error_responses(403)},
            summary="Balance, and where to deposit")
async def account(request: HttpRequest):
    key = require_scope(request, Scope.USAGE)
    return await db(_account, key.user_id)


def _deposits(user_id: int, limit: int) -> list[DepositOut]:
    account = services.account_get_or_create(User.objects.get(pk=user_id))
    return [DepositOut(tx_hash=d.tx_hash, log_index=d.log_index, block_number=d.block_number,
                       amount=str(d.amount_wei), sender=d.sender, state=d.state,
                       below_minimum=d.below_minimum, created_at=d.created_at)
            for d in selectors.deposits_for_account(account=account, limit=limit)]


@router.get("/account/deposits", response={200: list[DepositOut], **error_responses(400, 403)},
            summary="Deposits credited to the account, newest first")
async def deposits(request: HttpRequest, query: Query[ListQuery]):
    key = require_scope(request, Scope.USAGE)
    return await db(_deposits, key.user_id, query.limit)


def _withdraw(user_id: int, address: str, amount_wei: int) -> WithdrawalOut:
    account = services.account_get_or_create(User.objects.get(pk=user_id))
    with transaction.atomic():
        payout = funds.withdrawal_request(account=account, to_address=address,
                                          amount_wei=amount_wei)
        transaction.on_commit(lambda: enqueue("marketplace.tasks.send_payouts"))
    return _withdrawal(payout)


@router.post("/withdrawals",
             response={202: WithdrawalOut, **error_responses(400, 402, 403, body=True)},
             summary="Withdraw to a linked wallet")
async def withdraw(request: HttpRequest, body: WithdrawalIn):
    """Takes the amount from the balance now and pays it out of the deposit box. Above
    FUNDS_WITHDRAWAL_APPROVAL_WEI it waits for staff approval; at most
    FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI in any 24 hours (429 DAILY_LIMIT_EXCEEDED). A payout
    that fails on chain is refunded to the balance."""
    key = require_scope(request, Scope.WITHDRAW)
    return Status(202, await db(_withdraw, key.user_id, body.address, int(body.amount)))


def _withdrawals(user_id: int, limit: int) -> list[WithdrawalOut]:
    account = services.account_get_or_create(User.objects.get(pk=user_id))
    return [_withdrawal(p) for p in selectors.payouts_for_account(account=account,
                                                                  limit=limit)]


@router.get("/withdrawals", response={200: list[WithdrawalOut], **error_responses(400, 403)},
            summary="The account's withdrawals, newest first")
async def withdrawals(request: HttpRequest, query: Query[ListQuery]):
    key = require_scope(request, Scope.USAGE)
    return await db(_withdrawals, key.user_id, query.limit)
