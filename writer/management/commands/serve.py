"""`manage.py serve`: the product's web server (ASGI: HTTP and WebSocket on one port)."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the product over HTTP and WebSocket with uvicorn."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host: str, port: int, workers: int, **options):
        import uvicorn

        self.stdout.write(f"Serving on http://{host}:{port}/ (Ctrl-C stops)")
        uvicorn.run(
            "config.asgi:application",
            host=host,
            port=port,
            workers=workers,
            lifespan="off",
            log_level="warning",
            proxy_headers=True,
        )
