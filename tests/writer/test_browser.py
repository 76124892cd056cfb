"""The writer in a real headless Chromium, against the real server, chain and host."""

import os
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True)
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def server(network, tmp_path, settings):
    network.start_hosts({"host-1": 10**9})
    db = settings.DATABASES["default"]
    port = free_port()
    env = {**os.environ,
           "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
           "CHAIN_RPC_URL": network.anvil.url, "VAR_DIR": str(tmp_path),
           "WALLET_KEYSTORE_FILE": str(network.anvil.keys["platform"].keystore),
           "WALLET_PASSPHRASE_FILE": str(network.anvil.keys["platform"].passphrase_file)}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "manage.py", "serve", "--no-devnet", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/health/live", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=15)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_sign_up_generate_a_summary_watch_it_stream_and_find_it_in_history(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        # Record every length #output passes through, as the page paints it.
        page.add_init_script("""
            window.__lengths = [];
            document.addEventListener('DOMContentLoaded', () => {
                const out = document.getElementById('output');
                if (!out) return;
                window.__lengths.push(out.textContent.length);
                new MutationObserver(() => window.__lengths.push(out.textContent.length))
                    .observe(out, {childList: true, subtree: true, characterData: true});
            });""")
        page.goto(f"{server}/account/signup/")
        page.fill("#id_username", "erin")
        page.fill("#id_email", "erin@example.com")
        page.fill("#id_password1", "a-long-password-7")
        page.fill("#id_password2", "a-long-password-7")
        page.click("#signup")
        page.wait_for_selector("text=What shall we write?")
        page.select_option("#id_content_type", "summary")
        page.select_option("#id_length", "medium")
        page.fill("#id_prompt", "Lighthouses guided ships for centuries. Keepers lived in "
                                "them with their families, trimming wicks and winding the "
                                "clockwork that turned the lens. Fresnel lenses made the "
                                "light visible for miles. Radio beacons and satellite "
                                "navigation made most keepers unnecessary. Today most "
                                "lighthouses are automated, and many have become museums, "
                                "hotels or homes for birds. "
                                f"(Run {uuid.uuid4().hex[:8]}: results are cached for an hour.)")
        page.wait_for_selector("#estimate strong")  # the live estimate came back
        assert "ETH" in page.inner_text("#estimate")
        page.click("#generate")
        page.wait_for_url("**/g/*/")
        page.wait_for_selector("#result .facts", timeout=60000)
        lengths = page.evaluate("window.__lengths")
        grown = sorted({n for n in lengths if n > 0})
        assert len(grown) >= 2, f"the text did not grow in steps: {lengths[:50]}"
        assert page.query_selector("#result .facts"), "the generation did not finish"
        assert "Key points" in page.inner_text("#result")
        final = page.inner_text("#output")
        page.goto(f"{server}/history/")
        assert "Lighthouses guided ships" in page.inner_text("table")
        page.click("text=Lighthouses guided ships")
        assert page.inner_text("#output") == final
        browser.close()
