"""`manage.py serve`: the product's web server (ASGI: HTTP and WebSocket on one port).

With `--devnet` (the default when CHAIN_RPC_URL is unset) it first starts the local
marketplace (anvil, our contracts, three hosts) and a Celery worker with its beat, and
stops all of them when the server stops (Ctrl-C).
"""

import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve the product over HTTP and WebSocket with uvicorn."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument("--devnet", action="store_true", default=None,
                            help="start the local devnet and a worker (default without "
                                 "CHAIN_RPC_URL)")
        parser.add_argument("--no-devnet", action="store_false", dest="devnet")

    def handle(self, *args, host: str, port: int, workers: int, devnet, **options):
        import uvicorn

        from marketplace import devnet as local
        from marketplace.processes import ProcessGroup

        devnet = (settings.CHAIN_RPC_URL is None) if devnet is None else devnet
        extras = ProcessGroup(settings.DEVNET_DIR / "serve.json")
        if devnet:
            self.stdout.write("Starting the local marketplace (anvil, contracts, 3 hosts)…")
            try:
                for s in local.up(hosts=3):
                    self.stdout.write(f"  {s.name:<8} {s.url or ''}")
            except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
                local.down()
                raise CommandError(f"the devnet did not start: {exc}") from None
            extras.start("worker", [sys.executable, "-m", "celery", "-A", "config", "worker",
                                    "-B", "--pool", "solo", "--loglevel", "warning",
                                    "-s", str(settings.DEVNET_DIR / "celerybeat-schedule")],
                         log=settings.DEVNET_DIR / "logs" / "worker.log", cwd=settings.BASE_DIR)
            # /health reads the beat's last probe; the first would come only after the
            # beat's first interval, so the hosts just started are probed now.
            from marketplace.health import health_probes_run

            health_probes_run()
        # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit
        # lets the cleanup below stop the devnet too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl-C stops everything)")
        try:
            uvicorn.run("config.asgi:application", host=host, port=port, workers=workers,
                        lifespan="off", log_level="warning", proxy_headers=True)
        finally:
            if devnet:
                extras.stop_all()
                stopped = local.down()
                self.stdout.write(f"Stopped: {', '.join(stopped + ['worker'])}")
