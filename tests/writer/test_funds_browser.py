"""Money in and out in a real headless Chromium: a new user links a wallet with Sign-In
with Ethereum, gets test ether, deposits from the wallet (an injected EIP-1193 provider
whose key is an eth-account key on anvil), watches the confirmations until the page shows
the credit, withdraws to the wallet, and logs in again with the wallet alone."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import HTTPProvider, Web3

from accounts.models import ChainDeposit, Payout, PayoutState
from marketplace import tasks
from tests.writer.conftest import CHROMIUM

pytestmark = pytest.mark.django_db(transaction=True)
N = 2

# window.ethereum, as a wallet extension injects it: every request goes to the test's
# Python, which holds the key and talks to anvil.
PROVIDER = """
window.ethereum = {
  isTestWallet: true,
  request: async ({method, params}) => {
    const answer = JSON.parse(await window.testWallet(method, JSON.stringify(params || [])));
    if (answer.error) { const e = new Error(answer.error); e.code = 4001; throw e; }
    return answer.result;
  },
  on() {}, removeListener() {},
};
"""


class Wallet:
    """The wallet behind the injected provider: a fresh key, signing with eth-account."""

    def __init__(self, rpc_url: str):
        self.key = Account.create("browser test wallet")
        self.w3 = Web3(HTTPProvider(rpc_url))
        self.calls: list[str] = []

    def __call__(self, method: str, params: str) -> str:
        self.calls.append(method)
        params = json.loads(params)
        try:
            return json.dumps({"result": self.answer(method, params)})
        except Exception as exc:  # the page sees a rejected request, as from a wallet
            return json.dumps({"error": f"{type(exc).__name__}: {exc}"})

    def answer(self, method: str, params: list):
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.key.address]
        if method == "eth_chainId":
            return hex(self.w3.eth.chain_id)
        if method == "wallet_switchEthereumChain":
            return None
        if method == "personal_sign":
            message, address = params
            assert address.lower() == self.key.address.lower()
            signed = self.key.sign_message(encode_defunct(hexstr=message))
            return "0x" + signed.signature.hex().removeprefix("0x")
        if method == "eth_sendTransaction":
            (tx,) = params
            assert tx["from"].lower() == self.key.address.lower()
            call = {"from": self.key.address, "to": Web3.to_checksum_address(tx["to"]),
                    "value": int(tx["value"], 16), "data": tx["data"]}
            base = self.w3.eth.get_block("latest")["baseFeePerGas"]
            signed = self.key.sign_transaction({
                **call, "nonce": self.w3.eth.get_transaction_count(self.key.address),
                "gas": self.w3.eth.estimate_gas(call), "chainId": self.w3.eth.chain_id,
                "maxFeePerGas": 2 * base + 10**9, "maxPriorityFeePerGas": 10**9})
            return self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()
        raise ValueError(f"unsupported method {method}")


def off_loop(fn, *args):
    """Run `fn` on a thread of its own: Playwright's sync API keeps an event loop running on
    this one, where Django refuses database calls and the beat's tasks their own loop."""
    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()  # the thread's own, or the test database stays in use

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@pytest.fixture(autouse=True)
def few_confirmations(settings):
    settings.FUNDS_CONFIRMATIONS = N


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_sign_up_link_a_wallet_deposit_see_the_credit_withdraw_and_log_in_with_it(
        server, network):
    from playwright.sync_api import sync_playwright

    wallet = Wallet(network.anvil.url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        page.set_default_timeout(60000)  # a busy 2-core machine serves some pages slowly
        page.expose_function("testWallet", wallet)
        page.add_init_script(PROVIDER)
        page.goto(f"{server}/account/signup/")
        page.fill("#id_username", "frank")
        page.fill("#id_email", "frank@example.com")
        page.fill("#id_password1", "a-long-password-8")
        page.fill("#id_password2", "a-long-password-8")
        page.click("#signup")
        page.wait_for_selector("text=What shall we write?")

        page.goto(f"{server}/account/funds/")
        page.click("#link-button")  # Sign-In with Ethereum: nonce, personal_sign, link
        page.wait_for_selector(f"#wallets code:text('{wallet.key.address}')")
        assert "personal_sign" in wallet.calls

        page.click("#faucet-button")  # "Get test ETH" for the linked wallet
        page.wait_for_selector("text=test ETH to")
        assert wallet.w3.eth.get_balance(wallet.key.address) == 10**18

        page.fill("#deposit-amount", "0.05")
        page.click("#deposit-button")
        page.wait_for_selector("#deposit-state[data-state='confirming']")
        assert f"1 of {N}" in page.inner_text("#deposit-state")
        assert not off_loop(ChainDeposit.objects.exists)

        # Another block, and the beat's watcher: the page, polling, shows the credit.
        wallet.w3.provider.make_request("anvil_mine", ["0x1"])
        assert off_loop(tasks.watch_deposits) == 1
        page.wait_for_selector("#deposit-state[data-state='credited']", timeout=20000)
        assert "Credited" in page.inner_text("#deposit-state")
        deposit = off_loop(ChainDeposit.objects.get)
        assert deposit.amount_wei == 5 * 10**16 and deposit.sender == wallet.key.address
        balance_text = page.inner_text("#new-balance")
        assert balance_text  # the eth filter's rendering of the new balance

        page.goto(f"{server}/account/funds/")
        page.fill("#withdraw-amount", "0.01")
        page.click("#withdraw button[type=submit]")
        page.wait_for_selector("text=on its way")
        before = wallet.w3.eth.get_balance(wallet.key.address)
        assert off_loop(tasks.send_payouts) == {PayoutState.SENT: 1}
        assert wallet.w3.eth.get_balance(wallet.key.address) == before + 10**16
        page.goto(f"{server}/account/funds/")
        assert "Sent" in page.inner_text("#withdrawal-history")
        assert off_loop(Payout.objects.get).state == PayoutState.SENT

        # Log out, and back in with the wallet alone.
        page.click("text=Log out")
        page.goto(f"{server}/account/login/")
        page.click("#wallet-login-button")
        page.wait_for_selector("text=What shall we write?")
        assert "frank" in page.inner_text("header")
        browser.close()
