import pytest
from eth_account import Account

from marketplace.chain.errors import ChainError
from marketplace.chain.keystore import load_account, write_keystore


def test_a_key_round_trips_through_an_encrypted_keystore(tmp_path):
    account = Account.create()
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse\n")
    path = tmp_path / "wallet.json"
    assert write_keystore(path, account.key, "correct horse", kdf_iterations=2**10) == (
        account.address)
    assert path.stat().st_mode & 0o777 == 0o600
    assert account.key.hex().removeprefix("0x") not in path.read_text()
    assert load_account(path, passphrase).address == account.address


def test_a_wrong_passphrase_or_a_missing_file_is_a_permanent_error(tmp_path):
    path = tmp_path / "wallet.json"
    write_keystore(path, Account.create().key, "right", kdf_iterations=2**10)
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong")
    with pytest.raises(ChainError) as info:
        load_account(path, wrong)
    assert (info.value.code, info.value.permanent) == ("KEYSTORE_PASSPHRASE", True)
    with pytest.raises(ChainError) as info:
        load_account(tmp_path / "missing.json", wrong)
    assert info.value.code == "KEYSTORE_UNREADABLE"
