"""Slash commands, delivered as Discord's gateway delivers them (discord.py parses the
interaction and its command tree runs the checks and the handler), answered over the
webhook API that discord.py uses for interaction responses."""

from itertools import pairwise

import discord
import discord.ext.test as dpytest
import pytest
from asgiref.sync import sync_to_async

from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create
from accounts.tiers import price_for
from content.models import Status
from discordbot.models import DiscordJob, DiscordServer
from tests.discordbot.conftest import InkBot, interact

pytestmark = pytest.mark.django_db(transaction=True)
MANAGE_GUILD = discord.Permissions(manage_guild=True).value
EPHEMERAL = 64


async def test_settings_refuses_a_member_who_may_not_manage_the_server(bot, server, config,
                                                                      webhooks):
    await interact(bot, member=config.members[1], channel=config.channels[0],
                   name="settings", permissions=0, daily_cap_wei="1")
    (callback,) = webhooks.of("callback")
    assert callback["payload"]["data"]["flags"] == EPHEMERAL
    assert callback["payload"]["data"]["content"] == (
        "Only members who may manage this server can use this command.")
    await server.arefresh_from_db()
    assert server.daily_cap_wei == 10**15  # unchanged


async def test_settings_shows_and_changes_the_server_settings_for_an_admin(
        bot, server, config, webhooks):
    channel, guild = config.channels[0], config.guilds[0]
    await interact(bot, member=config.members[0], channel=channel, name="settings",
                   permissions=MANAGE_GUILD, channels=f"<#{channel.id}>",
                   daily_cap_wei="5000", image_roles=f"<@&{guild.id}>, 123456789012345678",
                   ask_model="smollm2-135m-instruct")
    (callback,) = webhooks.of("callback")
    content = callback["payload"]["data"]["content"]
    assert callback["payload"]["data"]["flags"] == EPHEMERAL
    assert content.startswith("Changed channels: ")
    assert f"Channels: <#{channel.id}>" in content
    assert "Daily cap: 0.000000000000005 ETH (0 ETH used today)" in content
    assert "Paid by: server-owner" in content
    await server.arefresh_from_db()
    assert server.allowed_channel_ids == [channel.id]
    assert server.daily_cap_wei == 5000
    assert server.image_role_ids == [guild.id, 123456789012345678]


async def test_a_malformed_setting_changes_nothing_and_says_why(bot, server, config,
                                                               webhooks):
    await interact(bot, member=config.members[0], channel=config.channels[0],
                   name="settings", permissions=MANAGE_GUILD, channels="all",
                   daily_cap_wei="lots")
    (callback,) = webhooks.of("callback")
    assert callback["payload"]["data"]["content"] == (
        "Nothing changed: the daily cap is an amount (in wei, or '0.01 ETH') or 'none', not "
        "'lots'.")
    await server.arefresh_from_db()
    assert server.daily_cap_wei == 10**15


async def test_imagine_is_refused_to_a_member_not_allowed_to_make_images(bot, server, config,
                                                                        webhooks):
    await interact(bot, member=config.members[1], channel=config.channels[0],
                   name="imagine", prompt="a red kite")
    (deferred,) = webhooks.of("callback")
    assert deferred["payload"]["type"] == 5  # "thinking…" at once
    assert webhooks.of("original")[-1]["payload"]["content"].startswith(
        "⚠️ You may not make images on this server")
    assert not await DiscordJob.objects.aexists()


async def test_private_ask_streams_into_an_ephemeral_answer_billed_to_the_server(
        network, bot, server, payer, config, webhooks, settings):
    network.start_hosts({"host-1": 10**9})
    settings.DISCORD_ASK_MAX_TOKENS = 64
    await interact(bot, member=config.members[0], channel=config.channels[0], name="ask",
                   prompt="Name three colours of the rainbow.", private=True)
    (deferred,) = webhooks.of("callback")
    assert deferred["payload"] == {"type": 5, "data": {"flags": EPHEMERAL}}
    job = await DiscordJob.objects.select_related("reservation").aget()
    assert job.status == Status.DONE and job.tokens > 0, job.error_message
    edits = webhooks.of("original")
    final = edits[-1]["payload"]["content"]
    assert final.startswith(job.text.strip()[:100])
    assert final.endswith(f"· {job.tokens} tokens · {job.model}")
    times = [e["t"] for e in edits]
    assert all(b - a >= 1.19 for a, b in pairwise(times))
    assert int(job.cost_wei) == price_for(job.reservation.tier, 10**9, job.tokens).charge_wei
    account = await sync_to_async(account_get_or_create)(payer)
    assert await sync_to_async(ledger_invariant_violations)(account=account) == []


async def test_the_slash_commands_are_registered_with_discord_on_start(db):
    client = InkBot()
    await client._async_setup_hook()
    dpytest.configure(client)
    client.tree._http = client.http  # the tree keeps the HTTP client it was made with
    registered = []

    async def bulk_upsert_global_commands(application_id, payload):
        registered.extend(payload)
        return [{**command, "id": str(i + 1), "application_id": str(application_id),
                 "version": "1"} for i, command in enumerate(payload)]

    client.http.bulk_upsert_global_commands = bulk_upsert_global_commands
    client._connection.application_id = client.user.id  # login() learns it from Discord
    await client.setup_hook()
    by_name = {command["name"]: command for command in registered}
    assert set(by_name) == {"ask", "imagine", "settings"}
    assert int(by_name["settings"]["default_member_permissions"]) == MANAGE_GUILD
    assert by_name["settings"]["dm_permission"] is False
    assert [o["name"] for o in by_name["ask"]["options"]] == ["prompt", "model", "private"]
    assert await DiscordServer.objects.acount() == 0
