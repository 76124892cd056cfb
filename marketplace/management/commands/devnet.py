"""`manage.py devnet up | down | status`: the local marketplace on this machine."""

import time

from django.core.management.base import BaseCommand, CommandError

from marketplace import devnet


class Command(BaseCommand):
    help = "Start, stop or show the local devnet: anvil, our contracts and local hosts."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["up", "down", "status"])
        parser.add_argument("--hosts", type=int, default=3,
                            help="how many local hosts to start (0 for the chain only)")

    def handle(self, *args, action: str, hosts: int, **options):
        if action == "up":
            started = time.monotonic()
            try:
                states = devnet.up(hosts=hosts)
            except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
                raise CommandError(str(exc)) from None
            self._show(states)
            self.stdout.write(f"devnet ready in {time.monotonic() - started:.1f} s")
        elif action == "down":
            stopped = devnet.down()
            self.stdout.write(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            states = devnet.status()
            if not states:
                self.stdout.write("devnet is not running")
            self._show(states)

    def _show(self, states):
        for s in states:
            mark = "up  " if s.running else "DOWN"
            self.stdout.write(f"{mark} {s.name:<10} {s.url or '':<28} {s.detail}")
