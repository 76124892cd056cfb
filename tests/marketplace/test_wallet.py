"""The platform wallet: every transaction the product sends is a ChainTransaction row, and
the devnet's well-known keys are refused on any chain but the devnet."""

import asyncio
import subprocess

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connections
from eth_account import Account
from web3 import AsyncWeb3

from marketplace import wallet
from marketplace.chain.connect import http_provider
from marketplace.chain.deploy import Terms, deploy, deployment_path
from marketplace.chain.devnet import CHAIN_ID, anvil_args, wait_for_rpc
from marketplace.chain.errors import ChainError, DevnetKeyOnPublicChain
from marketplace.chain.keystore import write_keystore
from marketplace.chain.tx import Sender
from marketplace.models import ChainTransaction
from marketplace.wallet import arbitrator_chain, audit_recorder, platform_chain
from tests.conftest import free_port
from tests.marketplace.chain.races import claim_in_one_block

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "smollm2-135m-instruct"
SEPOLIA = 11155111  # a public test network's chain id


@pytest.fixture(autouse=True)
async def close_db_connections():
    yield
    await sync_to_async(connections.close_all)()


async def test_every_transaction_sent_is_recorded_with_its_gas_and_status(on_anvil):
    sender = on_anvil.sender("host-4", audit=audit_recorder(31337))
    chain = on_anvil.chain("host-4")
    chain.sender = sender
    tx_hash = await chain.register(api_url="http://127.0.0.1:9", metadata={"region": "x"},
                                   prices={MODEL: 10**9}, stake=10**17)
    row = await ChainTransaction.objects.aget(tx_hash=tx_hash)
    receipt = await chain.w3.eth.get_transaction_receipt(tx_hash)
    assert (row.account, row.contract, row.function, row.status) == (
        sender.address, "NodeRegistry", "register", ChainTransaction.Status.MINED)
    assert row.gas_used == receipt["gasUsed"]
    assert row.block == receipt["blockNumber"]
    assert row.value_wei == 10**17
    assert "http://127.0.0.1:9" in row.args
    assert row.chain_id == 31337


async def test_a_transaction_that_reverts_on_chain_is_recorded_as_reverted(on_anvil):
    """A claim that loses a race in one block reverts after it was sent."""
    platform = on_anvil.chain("platform")
    hosts = [on_anvil.chain("host-1"), on_anvil.chain("host-2")]
    for host in hosts:
        host.sender.audit = audit_recorder(31337)
        if not (await host.get_node(host.address)).active:
            await host.register(api_url="http://127.0.0.1:9", metadata={},
                                prices={MODEL: 10**9}, stake=10**17)
    posted = await platform.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=8,
                                     max_price_per_token_wei=10**9,
                                     deadline=await platform.block_time() + 300)
    await claim_in_one_block(platform, hosts, posted.job_id, MODEL)
    statuses = [row.status async for row in ChainTransaction.objects.filter(
        function="claimJob", args__startswith=f"{posted.job_id},")]
    assert sorted(statuses) == ["mined", "reverted"]


@pytest.fixture(scope="module")
def public_chain():
    """anvil under a public network's chain id, with the devnet's accounts funded as they
    would be by anyone who sent ether to those well-known addresses."""
    port = free_port()
    args = anvil_args(port, None)
    args[args.index("--chain-id") + 1] = str(SEPOLIA)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def on_public_chain(public_chain, settings, tmp_path):
    settings.CHAIN_RPC = public_chain
    settings.VAR_DIR = tmp_path
    settings.DEVNET_DIR = tmp_path / "devnet"
    settings.CHAIN_DEPLOYMENTS_DIR = tmp_path / "deployments"
    wallet._handles.clear()
    wallet._arbitrator_handles.clear()
    return settings


@pytest.mark.parametrize("named", [True, False], ids=["named-in-settings", "fallback"])
async def test_the_devnet_key_is_refused_on_a_chain_that_is_not_the_devnet(
        on_public_chain, dev_keyring, named):
    settings = on_public_chain
    if named:
        settings.WALLET_KEYSTORE_FILE = str(dev_keyring["platform"].keystore)
        settings.WALLET_PASSPHRASE_FILE = str(dev_keyring["platform"].passphrase_file)
    else:  # no wallet named: the devnet's platform key is the fallback
        settings.WALLET_KEYSTORE_FILE = settings.WALLET_PASSPHRASE_FILE = None
    with pytest.raises(DevnetKeyOnPublicChain) as info:
        await platform_chain()
    assert (info.value.code, info.value.permanent) == ("DEVNET_KEY_ON_PUBLIC_CHAIN", True)
    assert info.value.address == dev_keyring["platform"].address
    assert info.value.chain_id == SEPOLIA
    assert f"not the devnet's {CHAIN_ID}" in info.value.message
    assert wallet._handles == {}  # nothing kept that a later call could sign with


async def test_deploying_from_the_devnet_key_to_another_chain_is_refused(
        on_public_chain, dev_keyring):
    settings = on_public_chain
    settings.WALLET_KEYSTORE_FILE = str(dev_keyring["platform"].keystore)
    settings.WALLET_PASSPHRASE_FILE = str(dev_keyring["platform"].passphrase_file)
    with pytest.raises(CommandError, match="DEVNET_KEY_ON_PUBLIC_CHAIN"):
        await sync_to_async(call_command)("deploy_contracts", "--treasury",
                                          dev_keyring["treasury"].address,
                                          "--arbitrator", Account.create().address)
    assert not deployment_path(settings.CHAIN_DEPLOYMENTS_DIR, SEPOLIA).exists()


async def test_a_wallet_of_its_own_works_on_that_chain(on_public_chain, tmp_path):
    settings = on_public_chain
    account = Account.create()
    keystore, passphrase = tmp_path / "wallet.json", tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple")
    write_keystore(keystore, account.key, "correct horse battery staple", kdf_iterations=2**4)
    settings.WALLET_KEYSTORE_FILE, settings.WALLET_PASSPHRASE_FILE = str(keystore), str(passphrase)
    w3 = AsyncWeb3(http_provider(settings.CHAIN_RPC))
    try:
        await w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        deployment = await deploy(w3, Sender(w3, account, lock_dir=tmp_path / "locks"),
                                  Terms(treasury=Account.create().address,
                                        arbitrator=Account.create().address))
    finally:
        await w3.provider.disconnect()
    path = deployment_path(settings.CHAIN_DEPLOYMENTS_DIR, SEPOLIA)
    path.parent.mkdir(parents=True)
    path.write_text(deployment.to_json())
    chain = await platform_chain()
    assert chain.address == account.address
    assert await chain.sender.chain_id() == SEPOLIA
    assert await chain.fee_bps() == 250


async def test_the_devnet_key_still_works_on_the_devnet(network):
    chain = await platform_chain()
    assert chain.address == network.anvil.keys["platform"].address
    assert await chain.sender.chain_id() == CHAIN_ID
    assert await chain.fee_bps() == 250


async def test_the_arbitrator_is_its_own_account_and_the_platform_wallet_is_not_it(network):
    """The devnet's arbitrator holds ARBITRATOR_ROLE in both contracts; the platform
    wallet, which pays for the jobs, holds it in neither and cannot resolve a dispute."""
    arbitrator, platform = await arbitrator_chain(), await platform_chain()
    assert arbitrator.address == network.anvil.keys["arbitrator"].address
    assert arbitrator.address != platform.address
    for contract in ("registry", "market"):
        assert await platform.has_role(contract, "ARBITRATOR_ROLE", arbitrator.address)
        assert not await platform.has_role(contract, "ARBITRATOR_ROLE", platform.address)
    with pytest.raises(ChainError) as info:
        await platform.resolve_dispute(1, 0)
    assert info.value.code == "AccessControlUnauthorizedAccount"


async def test_an_arbitrator_key_that_is_the_platform_wallet_is_refused(network, settings):
    settings.MARKETPLACE_ARBITRATOR_KEYSTORE_FILE = settings.WALLET_KEYSTORE_FILE
    settings.MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE = settings.WALLET_PASSPHRASE_FILE
    with pytest.raises(ChainError) as info:
        await arbitrator_chain()
    assert (info.value.code, info.value.permanent) == ("ARBITRATOR_IS_PLATFORM_WALLET", True)
    assert wallet._arbitrator_handles == {}


async def test_the_devnet_arbitrator_key_is_refused_on_a_chain_that_is_not_the_devnet(
        on_public_chain, dev_keyring):
    settings = on_public_chain
    settings.MARKETPLACE_ARBITRATOR_KEYSTORE_FILE = str(dev_keyring["arbitrator"].keystore)
    settings.MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE = str(
        dev_keyring["arbitrator"].passphrase_file)
    with pytest.raises(DevnetKeyOnPublicChain) as info:
        await arbitrator_chain()
    assert info.value.address == dev_keyring["arbitrator"].address
    assert wallet._arbitrator_handles == {}


async def test_deploying_with_the_platform_wallet_as_arbitrator_is_refused(on_anvil):
    sender = on_anvil.sender("platform")
    with pytest.raises(ChainError) as info:
        await deploy(sender.w3, sender, Terms(treasury=on_anvil.keys["treasury"].address,
                                              arbitrator=sender.address))
    assert (info.value.code, info.value.permanent) == ("ARBITRATOR_IS_ADMIN", True)


async def test_a_loops_handles_are_closed_and_forgotten_together(network):
    platform, arbitrator = await platform_chain(), await arbitrator_chain()
    await wallet.close_loop_handles()
    assert wallet._handles == {} and wallet._arbitrator_handles == {}
    assert await platform_chain() is not platform
    assert await arbitrator_chain() is not arbitrator


async def test_deploy_contracts_gives_the_role_to_the_arbitrators_key_and_pins_the_models(
        network, settings, tmp_path):
    """The production path: deployed from the platform wallet, ARBITRATOR_ROLE to the
    address of the arbitrator's keystore, and each --model approved with its file's hash."""
    from marketplace.chain.contracts import ZERO_HASH, Chain
    from marketplace.chain.deploy import load_deployment
    from marketplace.weights import SMOLLM2_ID, file_sha256

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF tiny weights")
    settings.CHAIN_DEPLOYMENTS_DIR = tmp_path / "fresh-deployments"
    # In a thread of its own, as from a shell: the command runs its own event loop, whose
    # audit trail writes through asgiref's thread-sensitive executor.
    await asyncio.to_thread(call_command, "deploy_contracts", "--treasury",
                            network.anvil.keys["treasury"].address, "--model",
                            f"tiny-1m={gguf}")
    w3 = AsyncWeb3(http_provider(settings.CHAIN_RPC))
    try:
        deployment = await load_deployment(w3, settings.CHAIN_DEPLOYMENTS_DIR)
        assert deployment is not None and deployment != network.anvil.deployment
        chain = Chain(w3, deployment)
        assert await chain.model_hash("tiny-1m") == file_sha256(gguf)
        assert await chain.model_hash(SMOLLM2_ID) == ZERO_HASH  # only what was named
        for contract in ("registry", "market"):
            assert await chain.has_role(contract, "ARBITRATOR_ROLE",
                                        network.anvil.keys["arbitrator"].address)
            assert not await chain.has_role(contract, "ARBITRATOR_ROLE",
                                            network.anvil.keys["platform"].address)
    finally:
        await w3.provider.disconnect()


async def test_deploy_contracts_refuses_a_malformed_model_argument(network):
    with pytest.raises(CommandError, match="expected MODEL_ID=PATH_TO_GGUF"):
        await sync_to_async(call_command)("deploy_contracts", "--treasury",
                                          network.anvil.keys["treasury"].address,
                                          "--model", "no-path")
