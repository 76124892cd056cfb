"""Mention conversations run in a session per channel (discordbot.jobs.chat_session): each
turn goes first to the host that answered the channel's last one; when that host dies,
another takes over with the turns the prompt carries. Through dpytest, anvil, host
processes and the bundled model."""

import discord.ext.test as dpytest
import pytest
from django.core.cache import cache

from content.models import Status
from discordbot.bot import LiveReply
from discordbot.jobs import Request, chat_session
from discordbot.models import DiscordCommand, DiscordJob
from marketplace.client.runner import _session_key
from marketplace.models import JobAttempt
from tests.discordbot.conftest import sent

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
TURNS = 20


def request(guild_id=1, channel_id=10, command=DiscordCommand.CHAT, user_id=100) -> Request:
    return Request(guild_id=guild_id, guild_name="g", channel_id=channel_id, user_id=user_id,
                   user_name="alice", command=command, prompt="hi")


def test_a_channels_mentions_share_one_session_and_no_other_channel_does():
    key = chat_session(request())
    assert key == "discord:1:10"
    assert chat_session(request(user_id=101)) == key  # everyone in the channel talks to it
    assert chat_session(request(channel_id=11)) != key
    assert chat_session(request(guild_id=2)) != key


def test_commands_other_than_a_mention_have_no_session():
    for command in (DiscordCommand.ASK, DiscordCommand.CODE, DiscordCommand.SUMMARIZE):
        assert chat_session(request(command=command)) is None


async def hosts_of(job: DiscordJob) -> list[str]:
    return [a.host_address async for a in
            JobAttempt.objects.filter(job_id=job.id).order_by("number")]


async def test_a_20_turn_mention_conversation_keeps_its_host_and_moves_with_its_context(
        network, bot, server, config, settings, monkeypatch):
    network.start_hosts({"host-1": PRICE, "host-2": PRICE})
    # The pause between a reply's edits spares Discord's rate limit; dpytest has none, and
    # 21 final edits would wait it out for 25 s.
    monkeypatch.setattr(LiveReply.__init__, "__kwdefaults__",
                        {**LiveReply.__init__.__kwdefaults__, "interval": 0.0})
    settings.DISCORD_ASK_MAX_TOKENS = 8
    settings.DISCORD_REQUESTS_PER_HOUR = 100
    # The verifier re-scores each whole prompt again and has tests of its own; these are
    # about where a conversation's turns go, many times faster without it.
    settings.MARKETPLACE_VERIFY_PROBATION = 0
    settings.MARKETPLACE_VERIFY_FRACTION = 0.0
    settings.MARKETPLACE_CHANNELS = True  # the product's default
    guild, channel = config.guilds[0], config.channels[0]
    session = f"discord:{guild.id}:{channel.id}"

    async def turn(number: int) -> DiscordJob:
        await dpytest.message(f"<@{bot.user.id}> Tell me about room {number}.",
                              channel=channel)
        assert sent()  # answered
        return await DiscordJob.objects.order_by("-created").afirst()

    jobs = [await turn(number) for number in range(1, TURNS + 1)]
    assert [j.status for j in jobs] == [Status.DONE] * TURNS, [j.error_message for j in jobs]
    assert [j.command for j in jobs] == ["chat"] * TURNS
    assert len({j.id for j in jobs}) == TURNS  # every turn its own job, in order
    # Each prompt carried the turns before it (as many as DISCORD_CHAT_TURNS keeps).
    for number, (before, job) in enumerate(zip(jobs, jobs[1:], strict=False), 2):
        assert f"Tell me about room {number - 1}." in job.full_prompt
        assert before.text.strip()[:30] in job.full_prompt
    # Nothing failed: one attempt each, all on one host, the session's.
    hosts = [await hosts_of(j) for j in jobs]
    assert all(len(h) == 1 for h in hosts), hosts
    assert len({h[0] for h in hosts[1:]}) == 1
    assert await cache.aget(_session_key(session)) == hosts[-1][0]
    # Every turn was paid through one payment channel to that host: no job on chain.
    attempts = [a async for a in JobAttempt.objects.filter(
        job_id__in=[j.id for j in jobs])]
    assert all(a.channel_id and a.chain_job_id is None and a.voucher_wei > 0
               for a in attempts)
    assert len({a.channel_id for a in attempts}) == 1

    # The channel's host dies between two turns: the next goes to the other one, with the
    # channel's turns in its prompt.
    [dead] = [h for h in network.hosts if h.address == hosts[-1][0]]
    dead.kill()
    last = await turn(TURNS + 1)
    assert last.status == Status.DONE, last.error_message
    assert last.host and last.host != dead.address
    assert (await hosts_of(last))[-1] == last.host
    for number in range(TURNS + 1 - settings.DISCORD_CHAT_TURNS, TURNS + 1):
        assert f"Tell me about room {number}." in last.full_prompt
    assert jobs[-1].text.strip()[:30] in last.full_prompt
    assert await cache.aget(_session_key(session)) == last.host
