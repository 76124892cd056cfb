"""A host serves a model id only with the GGUF file that id names on chain: it hashes the
file at start and refuses to start when the sha256 differs or the id is not approved."""

import os
import shutil
import subprocess
import sys

import pytest

from marketplace.host.main import HostOptions, WeightsRefused, build, check_weights
from marketplace.weights import SMOLLM2_ID, bundled_model_path, file_sha256
from tests.conftest import free_port


@pytest.fixture(scope="module")
def altered_gguf(tmp_path_factory):
    """The bundled GGUF with one byte of its tensor data changed: the same size, the same
    header, other weights."""
    path = tmp_path_factory.mktemp("weights") / "SmolLM2-altered.gguf"
    shutil.copyfile(bundled_model_path(), path)
    with open(path, "r+b") as out:
        out.seek(path.stat().st_size // 2)
        byte = out.read(1)
        out.seek(-1, os.SEEK_CUR)
        out.write(bytes([byte[0] ^ 0xFF]))
    return path


def options_for(on_anvil, tmp_path, **overrides) -> HostOptions:
    deployment_file = tmp_path / "deployment.json"
    deployment_file.write_text(on_anvil.deployment.to_json())
    key = on_anvil.keys["host-3"]
    values = dict(port=free_port(), price_per_token_wei=10**9, keystore=key.keystore,
                  passphrase_file=key.passphrase_file, rpc_url=on_anvil.url,
                  deployment_file=deployment_file, results_dir=tmp_path / "host")
    values.update(overrides)
    return HostOptions(**values)


async def test_the_approved_file_is_accepted(on_anvil):
    chain = on_anvil.chain("host-3")
    try:
        pinned = await check_weights(chain, SMOLLM2_ID, bundled_model_path())
    finally:
        await chain.close()
    assert pinned == file_sha256(bundled_model_path())


async def test_a_host_refuses_to_start_with_weights_whose_bytes_differ(on_anvil, tmp_path,
                                                                      altered_gguf):
    with pytest.raises(WeightsRefused) as info:
        await build(options_for(on_anvil, tmp_path, model_path=altered_gguf))
    message = str(info.value)
    assert file_sha256(altered_gguf).hex() in message
    assert file_sha256(bundled_model_path()).hex() in message
    assert SMOLLM2_ID in message
    chain = on_anvil.chain("host-3")
    try:  # it never registered
        assert (await chain.get_node(chain.address)).stake == 0
    finally:
        await chain.close()


async def test_a_host_refuses_to_serve_a_model_id_that_is_not_approved(on_anvil, tmp_path):
    with pytest.raises(WeightsRefused, match="'tinyllama-1b' is not approved on chain"):
        await build(options_for(on_anvil, tmp_path, model="tinyllama-1b"))


async def test_an_upstream_backend_without_a_file_still_needs_an_approved_model(on_anvil,
                                                                               tmp_path):
    with pytest.raises(WeightsRefused, match="not approved"):
        await build(options_for(on_anvil, tmp_path, backend="openai", model="tinyllama-1b",
                                upstream_url="http://127.0.0.1:9"))


def test_runhost_exits_with_a_clear_error_for_other_weights(on_anvil, tmp_path, altered_gguf):
    """The command a host operator runs: it stops before loading the model, and says why."""
    options = options_for(on_anvil, tmp_path, model_path=altered_gguf)
    result = subprocess.run(
        [sys.executable, "manage.py", "runhost", "--port", str(options.port),
         "--price", "1000000000", "--keystore", str(options.keystore),
         "--passphrase-file", str(options.passphrase_file), "--rpc-url", on_anvil.url,
         "--deployment", str(options.deployment_file),
         "--results-dir", str(options.results_dir), "--model-path", str(altered_gguf)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
    assert result.returncode != 0
    assert "is approved on chain as sha256" in result.stderr
    assert "will not serve them under that id" in result.stderr


def test_a_file_is_hashed_again_when_it_changes(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"GGUF one")
    first = file_sha256(path)
    path.write_bytes(b"GGUF two")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    assert file_sha256(path) != first
    assert file_sha256(path) == file_sha256(path)
