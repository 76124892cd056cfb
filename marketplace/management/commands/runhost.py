"""`manage.py runhost`: run a host node. It uses no database of the product's."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from marketplace.chain.errors import ChainError
from marketplace.host.behaviours import BEHAVIOURS


class Command(BaseCommand):
    help = "Run a marketplace host: register on chain and serve a language model."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=9101)
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--public-url", help="URL clients reach this host at")
        parser.add_argument("--price", type=int, required=True, help="wei per token")
        parser.add_argument("--keystore", type=Path, required=True)
        parser.add_argument("--passphrase-file", type=Path, required=True)
        parser.add_argument("--rpc-url", default=None)
        parser.add_argument("--deployment", type=Path, default=None,
                            help="deployments file (default: var/deployments/<chain id>.json)")
        parser.add_argument("--results-dir", type=Path, default=None)
        parser.add_argument("--backend", choices=["llama.cpp", "openai"], default="llama.cpp")
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--model-path", type=Path, default=None)
        parser.add_argument("--upstream-url", default=None,
                            help="OpenAI-compatible server, for --backend openai")
        parser.add_argument("--upstream-model", default=None)
        parser.add_argument("--capacity", type=int, default=8, help="queued generations")
        parser.add_argument("--parallel", type=int, default=4,
                            help="generations decoded together (llama.cpp backend)")
        parser.add_argument("--stake", type=int, default=10**17, help="stake in wei")
        parser.add_argument("--region", default="local")
        parser.add_argument("--max-connections", type=int, default=settings.HOST_MAX_CONNECTIONS,
                            help="requests and streams open at once, in total")
        parser.add_argument("--max-connections-per-ip", type=int,
                            default=settings.HOST_MAX_CONNECTIONS_PER_IP,
                            help="... from one IPv4 address or IPv6 /64")
        parser.add_argument("--handshake-timeout", type=float,
                            default=settings.HOST_HANDSHAKE_TIMEOUT_S,
                            help="seconds a stream may take to answer the challenge")
        parser.add_argument("--failed-handshakes-per-minute", type=int,
                            default=settings.HOST_FAILED_HANDSHAKES_PER_MINUTE,
                            help="per address, before its streams are refused")
        parser.add_argument("--no-channels", action="store_true",
                            help="take per-job escrow only, no payment channels")
        parser.add_argument("--credit-limit", type=int, default=settings.HOST_CREDIT_LIMIT_WEI,
                            help="wei of unpaid work on a channel before waiting for a "
                                 "voucher (default: 64 tokens at --price)")
        parser.add_argument("--vouchers-every", type=int, default=settings.HOST_VOUCHERS_EVERY,
                            help="tokens between a client's vouchers, at most")
        parser.add_argument("--payment-wait", type=float, default=settings.HOST_PAYMENT_WAIT_S,
                            help="seconds a channel stream waits for a voucher")
        parser.add_argument("--p2p-bootstrap", action="append", default=None,
                            help="a bootstrap node's multiaddr (repeatable; default: "
                                 "P2P_BOOTSTRAP, or the devnet's node)")
        parser.add_argument("--p2p-port", type=int, default=0,
                            help="libp2p TCP port (0: any free one)")
        parser.add_argument("--behaviour", choices=sorted(BEHAVIOURS), default="honest",
                            help="a hostile host, for tests (marketplace/host/behaviours.py)")

    def handle(self, *args, **o):
        from marketplace.chain.devnet import CHAIN_ID
        from marketplace.host.main import HostOptions, run
        from marketplace.p2p.client import bootstrap_addrs

        deployment = o["deployment"] or settings.CHAIN_DEPLOYMENTS_DIR / f"{CHAIN_ID}.json"
        if not deployment.exists():
            raise CommandError(f"no deployments file at {deployment}: deploy the contracts "
                               "first (`manage.py devnet up --hosts 0` locally)")
        options = HostOptions(
            port=o["port"], host=o["host"], public_url=o["public_url"],
            price_per_token_wei=o["price"], keystore=o["keystore"],
            passphrase_file=o["passphrase_file"], rpc_url=o["rpc_url"] or settings.CHAIN_RPC,
            deployment_file=deployment,
            results_dir=o["results_dir"] or settings.VAR_DIR / "host" / str(o["port"]),
            backend=o["backend"], model=o["model"], model_path=o["model_path"],
            upstream_url=o["upstream_url"], upstream_model=o["upstream_model"],
            capacity=o["capacity"], parallel=o["parallel"], stake_wei=o["stake"],
            region=o["region"], max_connections=o["max_connections"],
            max_connections_per_ip=o["max_connections_per_ip"],
            handshake_timeout_s=o["handshake_timeout"],
            failed_handshakes_per_minute=o["failed_handshakes_per_minute"],
            behaviour=o["behaviour"], channels=not o["no_channels"],
            credit_limit_wei=o["credit_limit"], vouchers_every=o["vouchers_every"],
            payment_wait_s=o["payment_wait"],
            p2p_bootstrap=tuple(o["p2p_bootstrap"] if o["p2p_bootstrap"] is not None
                                else bootstrap_addrs()),
            p2p_port=o["p2p_port"],
        )
        try:
            run(options)
        except (ChainError, ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from None
