"""Reads of the Discord bot: a user's history, a server's spending today."""

from __future__ import annotations

from django.utils import timezone

from discordbot.models import DiscordDailySpend, DiscordJob, DiscordServer


def history_for_user(*, user_id: int, limit: int = 10) -> list[DiscordJob]:
    """The user's newest jobs, newest first."""
    return list(DiscordJob.objects.filter(user_id=user_id).order_by("-created")[:limit])


def server_committed_today(*, server: DiscordServer) -> int:
    """What counts against the server's cap today: charges of finished jobs and the worst
    case of running ones."""
    row = DiscordDailySpend.objects.filter(server=server, day=timezone.now().date()).first()
    return row.committed_wei if row else 0
