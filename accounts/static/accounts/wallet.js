// "Add funds": a deposit sent from the browser's injected wallet (EIP-1193,
// window.ethereum), and Sign-In with Ethereum (EIP-4361) to link that wallet. The page's
// progress fragment is then polled by htmx until the deposit is credited.
(function () {
  "use strict";

  function csrfToken() {
    const headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    return headers["X-CSRFToken"] || "";
  }

  function say(text) {
    const el = document.getElementById("wallet-message");
    if (el) el.textContent = text;
  }

  // "1.5" ETH -> wei as a 0x hex string, exactly (BigInt: no floating point).
  function weiHex(text) {
    const match = /^\s*(\d*)(?:\.(\d{0,18}))?\s*$/.exec(text);
    if (!match || (match[1] === "" && !match[2])) return null;
    const whole = BigInt(match[1] || "0");
    const fraction = BigInt((match[2] || "").padEnd(18, "0"));
    const wei = whole * 10n ** 18n + fraction;
    return wei > 0n ? "0x" + wei.toString(16) : null;
  }

  function provider() {
    if (!window.ethereum) {
      say("No wallet found in this browser: install one (MetaMask, Rabby, Coinbase Wallet), or deposit by hand below.");
      return null;
    }
    return window.ethereum;
  }

  async function onChain(eth, chainId) {
    const wanted = "0x" + Number(chainId).toString(16);
    const current = await eth.request({ method: "eth_chainId" });
    if (current.toLowerCase() === wanted) return;
    await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: wanted }] });
  }

  async function deposit() {
    const box = document.getElementById("deposit");
    const eth = provider();
    if (!eth || !box) return;
    const value = weiHex(document.getElementById("deposit-amount").value);
    if (!value) { say("Give an amount in ETH, more than 0, with at most 18 decimals."); return; }
    try {
      const [from] = await eth.request({ method: "eth_requestAccounts" });
      await onChain(eth, box.dataset.chainId);
      say("Confirm the deposit in your wallet…");
      const tx = await eth.request({
        method: "eth_sendTransaction",
        params: [{ from, to: box.dataset.contract, value, data: box.dataset.callData }],
      });
      say("Sent. Waiting for confirmations.");
      htmx.ajax("GET", box.dataset.progressUrl + "?tx=" + encodeURIComponent(tx),
                { target: "#deposit-progress", swap: "innerHTML" });
    } catch (err) {
      say("The wallet did not send the deposit: " + (err && err.message ? err.message : err));
    }
  }

  function siweMessage(info, address) {
    const host = info.domain;
    return [
      `${host} wants you to sign in with your Ethereum account:`, address, "",
      "Link this wallet to your Inkmarket account.", "",
      `URI: ${info.uri}`, "Version: 1", `Chain ID: ${info.chain_id}`, `Nonce: ${info.nonce}`,
      `Issued At: ${new Date().toISOString()}`,
    ].join("\n");
  }

  function utf8Hex(text) {
    return "0x" + Array.from(new TextEncoder().encode(text),
                             (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Exported for the login page too: sign a SIWE message and post it to `postUrl`.
  async function signIn(nonceUrl, postUrl) {
    const eth = provider();
    if (!eth) return null;
    const [raw] = await eth.request({ method: "eth_requestAccounts" });
    // The message names the address in its EIP-55 form, which needs keccak-256: the
    // server's nonce answer gives it.
    const info = await (await fetch(nonceUrl + "?address=" + encodeURIComponent(raw),
                                    { credentials: "same-origin" })).json();
    const message = siweMessage(info, info.address);
    const signature = await eth.request({ method: "personal_sign", params: [utf8Hex(message), raw] });
    const answer = await fetch(postUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify({ message, signature }),
    });
    return { ok: answer.ok, body: await answer.json() };
  }

  async function link() {
    const button = document.getElementById("link-button");
    try {
      const result = await signIn(button.dataset.nonceUrl, button.dataset.linkUrl);
      if (!result) return;
      if (result.ok) { window.location.reload(); return; }
      say(result.body.error.message + " (" + result.body.error.code + ")");
    } catch (err) {
      say("The wallet did not sign: " + (err && err.message ? err.message : err));
    }
  }

  window.inkmarketSignIn = signIn;
  document.addEventListener("DOMContentLoaded", function () {
    const depositButton = document.getElementById("deposit-button");
    if (depositButton) depositButton.addEventListener("click", deposit);
    const linkButton = document.getElementById("link-button");
    if (linkButton) linkButton.addEventListener("click", link);
    const loginButton = document.getElementById("wallet-login-button");
    if (loginButton) {
      loginButton.addEventListener("click", async function () {
        try {
          const result = await signIn(loginButton.dataset.nonceUrl, loginButton.dataset.loginUrl);
          if (result && result.ok) { window.location.href = result.body.redirect; return; }
          if (result) say(result.body.error.message + " (" + result.body.error.code + ")");
        } catch (err) {
          say("The wallet did not sign: " + (err && err.message ? err.message : err));
        }
      });
    }
  });
})();
