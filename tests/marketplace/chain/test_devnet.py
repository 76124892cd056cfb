import pytest
from eth_account import Account

from marketplace.chain.devnet import (
    CHAIN_ID,
    WELL_KNOWN_ADDRESSES,
    dev_keys,
    dev_private_key,
    refuse_devnet_key,
)
from marketplace.chain.errors import ChainError, DevnetKeyOnPublicChain

# anvil's first two development accounts, as anvil prints them and tutorials copy them.
ANVIL_ACCOUNT_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_ACCOUNT_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.mark.parametrize("address", [ANVIL_ACCOUNT_0, ANVIL_ACCOUNT_1.lower()])
def test_a_well_known_devnet_account_is_refused_on_another_chain(address):
    with pytest.raises(DevnetKeyOnPublicChain) as info:
        refuse_devnet_key(address, chain_id=1)
    assert isinstance(info.value, ChainError)
    assert (info.value.code, info.value.permanent) == ("DEVNET_KEY_ON_PUBLIC_CHAIN", True)


def test_every_devnet_role_is_refused_on_another_chain_and_allowed_on_the_devnet(tmp_path):
    for key in dev_keys(tmp_path).values():
        refuse_devnet_key(key.address, chain_id=CHAIN_ID)
        with pytest.raises(DevnetKeyOnPublicChain):
            refuse_devnet_key(key.address, chain_id=8453)


def test_an_account_of_ones_own_is_allowed_on_any_chain():
    address = Account.create().address
    for chain_id in (1, 8453, CHAIN_ID):
        refuse_devnet_key(address, chain_id=chain_id)


def test_the_well_known_addresses_are_the_mnemonics_first_twenty_accounts():
    derived = {Account.from_key(dev_private_key(i)).address for i in range(20)}
    assert derived == WELL_KNOWN_ADDRESSES
