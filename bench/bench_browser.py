"""From clicking Generate to the first token painted in a real (headless) Chromium, against
the host's own time to first token over its WebSocket, in the same run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.chainkit import BenchChain
from bench.common import ROOT, free_port, process, report, wait_http

CHROMIUM = "/usr/bin/chromium"
ROUNDS = 5
PROMPT = "Tides rise and fall twice a day because of the moon's pull on the oceans."


async def host_ttft(net: BenchChain, host_url: str, host_address: str, text: str) -> float:
    """The host's own first token: post a job, then time its stream's first token. The
    prompt is what the writer sends for a short summary of `text` (the system turn and the
    instructions are most of its tokens, and the prompt's length sets the time to the
    first token), so both figures evaluate prompts of the same length."""
    from eth_account.messages import encode_defunct

    from marketplace.client import pool
    from marketplace.client.stream import stream_job
    from marketplace.protocol import GenerationRequest

    client = net.chain("host-4")
    from content.prompts import build_prompt

    spec = build_prompt("summary", text, length="short")
    request = GenerationRequest(model="smollm2-135m-instruct", prompt=spec.text,
                                maxTokens=spec.max_tokens, temperature=0.0)
    posted = await client.post_job(model=request.model, prompt_hash=request.digest(),
                                   max_tokens=request.max_tokens,
                                   max_price_per_token_wei=2 * 10**9,
                                   deadline=await client.block_time() + 600, host=host_address)
    first: list[float] = []

    async def on_token(piece):
        if not first:
            first.append(time.perf_counter())

    account = client.sender.account
    started = time.perf_counter()
    await stream_job(host_url, chain_job_id=posted.job_id,
                     chain_id=client.deployment.chain_id, node_id=host_address,
                     request=request, on_token=on_token,
                     signer=lambda t: "0x" + account.sign_message(
                         encode_defunct(text=t)).signature.hex().removeprefix("0x"))
    await client.close()
    await pool.close()
    return (first[0] - started) * 1000


def server_times(var: Path, generation_id: str) -> tuple[float, float]:
    """When the server created the generation (ms since the epoch, the browser's clock on
    this machine) and how long its job took to the first token, from the database."""
    import datetime
    import sqlite3

    with sqlite3.connect(var / "db.sqlite3") as db:
        created, ttft = db.execute("SELECT created, ttft_ms FROM writer_generation "
                                   "WHERE replace(id, '-', '') = ?",
                                   (generation_id.replace("-", ""),)).fetchone()
    when = datetime.datetime.fromisoformat(created)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp() * 1000, float(ttft or 0)


def main() -> None:
    if not os.path.exists(CHROMIUM):
        print("browser benchmark skipped: Debian's chromium is not installed", file=sys.stderr)
        return
    from playwright.sync_api import sync_playwright

    var = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    net = BenchChain()
    try:
        asyncio.run(net.deploy())
        (var / "deployments").mkdir()
        deployment = var / "deployments" / "31337.json"
        deployment.write_text(net.deployment.to_json())
        key = net.keys["host-1"]
        host_port, web_port = free_port(), free_port()
        env = {"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
               "VAR_DIR": str(var), "CHAIN_RPC_URL": net.url, "LOG_LEVEL": "ERROR",
               "WALLET_KEYSTORE_FILE": str(net.keys["platform"].keystore),
               "WALLET_PASSPHRASE_FILE": str(net.keys["platform"].passphrase_file)}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True,
                       env={**os.environ, **env})
        host_cmd = [sys.executable, "manage.py", "runhost", "--port", str(host_port),
                    "--price", str(10**9), "--keystore", str(key.keystore),
                    "--passphrase-file", str(key.passphrase_file), "--rpc-url", net.url,
                    "--deployment", str(deployment), "--results-dir", str(var / "host")]
        web_cmd = [sys.executable, "manage.py", "serve", "--no-devnet", "--port", str(web_port)]
        with process(host_cmd, env=env), process(web_cmd, env=env):
            host_url, web_url = f"http://127.0.0.1:{host_port}", f"http://127.0.0.1:{web_port}"
            wait_http(f"{host_url}/health")
            wait_http(f"{web_url}/health/live")
            host_figures, browser_figures, phases = [], [], []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"])
                page = browser.new_page()
                # Watch #output from the moment each page starts, so the first token is
                # timed when it is painted, whenever the benchmark gets to look.
                page.add_init_script("""
                    new MutationObserver((m, o) => {
                      const out = document.getElementById('output');
                      if (out && out.textContent.length && !window.__painted) {
                        requestAnimationFrame(() => { window.__painted = Date.now(); });
                        o.disconnect();
                      }
                    }).observe(document, {childList: true, subtree: true,
                                          characterData: true});
                """)
                # Playwright's sync API owns this thread's event loop: the host's own
                # figure is taken on a thread of its own.
                side = concurrent.futures.ThreadPoolExecutor(max_workers=1)
                page.goto(f"{web_url}/account/signup/")
                page.fill("#id_username", "bench")
                page.fill("#id_email", "bench@example.com")
                page.fill("#id_password1", "a-long-password-7")
                page.fill("#id_password2", "a-long-password-7")
                page.click("#signup")
                for i in range(ROUNDS + 1):
                    host_figures.append(side.submit(
                        asyncio.run, host_ttft(net, host_url, key.address,
                                             f"{PROMPT} ({i}, by the host)")).result())
                    page.goto(f"{web_url}/")
                    page.select_option("#id_content_type", "summary")
                    page.select_option("#id_length", "short")
                    page.fill("#id_prompt", f"{PROMPT} ({i})")  # no cache hits
                    page.wait_for_selector("#estimate strong")
                    # The click time is kept across the navigation in sessionStorage; the
                    # generation page records when #output first holds text.
                    page.evaluate("sessionStorage.setItem('clicked', String(Date.now()))")
                    page.click("#generate")
                    page.wait_for_url("**/g/*/")
                    page.wait_for_function("window.__painted !== undefined", timeout=60000)
                    painted = page.evaluate("window.__painted")
                    clicked = int(page.evaluate("sessionStorage.getItem('clicked')"))
                    browser_figures.append(painted - clicked)
                    # Where the time went: the form's POST and redirect, the page's load,
                    # then the wait for the stream's first token.
                    loaded = page.evaluate("performance.timeOrigin + "
                                           "performance.timing.domContentLoadedEventEnd"
                                           " - performance.timing.navigationStart")
                    generation = page.url.rstrip("/").rsplit("/", 1)[-1]
                    created, ttft = server_times(var, generation)
                    phases.append((page.evaluate("performance.timeOrigin") - clicked,
                                   loaded - clicked, created - clicked, ttft))
                    page.wait_for_selector("#result .facts", timeout=60000)
                browser.close()
        # The first round warms up connections and caches on both sides.
        host = statistics.median(host_figures[1:])
        seen = statistics.median(browser_figures[1:])
        report("host ttft", host, "ms")
        report("browser ttft (click to first token painted)", seen, "ms")
        report("browser added ttft ms", seen - host, "ms")
        report("click to generation page requested", statistics.median(
            p[0] for p in phases[1:]), "ms")
        report("click to generation page loaded", statistics.median(
            p[1] for p in phases[1:]), "ms")
        report("click to generation created (server)", statistics.median(
            p[2] for p in phases[1:]), "ms")
        report("job start to first token (server)", statistics.median(
            p[3] for p in phases[1:]), "ms")
    finally:
        net.close()


if __name__ == "__main__":
    # The host's own first token is timed through the client, which bounds what hosts
    # send (and checks their URLs) by Django's settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    django.setup()
    main()
