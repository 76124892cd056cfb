import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_artifacts_match_the_sources(tmp_path):
    """Recompile into a scratch folder and compare with what is committed."""
    result = subprocess.run(["node", "contracts/compile.js", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in (ROOT / "contracts" / "artifacts").glob("*.json"))
    assert built == committed
    for name in built:
        assert (tmp_path / name).read_text() == (
            ROOT / "contracts" / "artifacts" / name).read_text(), f"{name} is stale"


def test_a_changed_source_is_caught(tmp_path):
    """The check mode fails on a stale artifact, which is what `make test` relies on."""
    stale = tmp_path / "artifacts"
    stale.mkdir()
    for path in (ROOT / "contracts" / "artifacts").glob("*.json"):
        (stale / path.name).write_text(path.read_text().replace('"abi"', '"abi" ', 1))
    result = subprocess.run(["node", "contracts/compile.js", "--check", "--out", str(stale)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "differs from its source" in result.stderr
