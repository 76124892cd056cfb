"""Message commands that are answered before any host is asked: help, mistakes, refusals."""

import re

import discord.ext.test as dpytest
import pytest
from asgiref.sync import sync_to_async
from discord.ext import commands

from discordbot import services
from discordbot.models import DiscordJob
from tests.discordbot.conftest import current, reply_to, sent

pytestmark = pytest.mark.django_db(transaction=True)


async def test_help_lists_the_commands_and_the_hourly_limit(bot, server, settings):
    settings.DISCORD_REQUESTS_PER_HOUR = 7
    await dpytest.message("!help")
    (answer,) = sent()
    for command in ("!ask", "!code", "!summarize", "!image", "!history", "/ask", "/imagine",
                    "/settings"):
        assert command in answer.content
    assert "7 requests an hour" in answer.content


async def test_an_unknown_command_is_answered_not_ignored(bot, server):
    with pytest.raises(commands.CommandNotFound):
        await dpytest.message("!frobnicate now")
    (answer,) = sent()
    assert "I don't know `!frobnicate`" in answer.content


async def test_ask_without_a_question_says_how_to_ask(bot, server):
    await dpytest.message("!ask   ")
    (answer,) = sent()
    assert "!ask QUESTION" in answer.content


async def test_summarize_that_is_not_a_reply_says_how_to_use_it(bot, server):
    await dpytest.message("!summarize")
    (answer,) = sent()
    assert "as a reply to the message" in answer.content
    assert not await DiscordJob.objects.aexists()


async def test_summarize_of_a_message_without_text_says_so(bot, server, config):
    alice, bob = config.members[:2]
    empty = await dpytest.message("", member=bob)
    await reply_to(empty, "!summarize", alice)
    (answer,) = sent()
    assert answer.content == "That message has no text to summarize."
    assert not await DiscordJob.objects.aexists()


async def test_the_eleventh_request_in_an_hour_is_refused_in_plain_words(bot, server, config):
    alice = config.members[0]
    for _ in range(10):  # ten requests already counted this hour
        assert (await sync_to_async(services.quota_hit)(user_id=alice.id)).allowed
    await dpytest.message("!ask What is a river delta?", member=alice)
    (reply,) = sent()
    assert reply.content == "Thinking…"
    assert current(reply).startswith("⚠️ You have used your 10 requests for this hour; try "
                                     "again in ")
    assert not await DiscordJob.objects.aexists()  # refused before anything was reserved


async def test_a_server_without_a_billing_account_says_who_can_set_one(bot, config, payer):
    from discordbot.models import DiscordServer

    guild = config.guilds[0]
    await DiscordServer.objects.acreate(guild_id=guild.id, name=guild.name)
    await dpytest.message("!ask Anyone there?")
    (reply,) = sent()
    assert "no billing account yet" in current(reply)


async def test_image_is_refused_to_a_member_without_a_permitted_role(bot, server, config):
    await dpytest.message("!image a lighthouse at dusk", member=config.members[1])
    (reply,) = sent()
    assert "You may not make images on this server" in current(reply)
    assert not await DiscordJob.objects.aexists()


async def test_history_of_someone_new_says_there_is_none(bot, server):
    await dpytest.message("!history")
    (answer,) = sent()
    assert answer.content == "You have no requests yet."


async def test_a_bare_mention_gets_a_greeting_and_costs_nothing(bot, server):
    await dpytest.message(f"<@{bot.user.id}>")
    (answer,) = sent()
    assert "Hello!" in answer.content
    assert not await DiscordJob.objects.aexists()


async def test_a_command_that_crashes_is_answered_and_the_bot_goes_on(bot, server, monkeypatch,
                                                                     caplog):
    # A fault that cannot be produced for real here: the database failing mid-command.
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "server_get_or_create", broken)
    await dpytest.message("!ask What is a fjord?")
    (reply,) = sent()  # said in the reply that promised an answer
    said = current(reply)
    assert re.fullmatch(r"⚠️ Something went wrong on our side; nothing was charged for it\. "
                        r"Reference: `[0-9a-f]{12}`\.", said), said
    # The reference finds the crash in the log; the channel never hears what it was.
    reference = re.search(r"`([0-9a-f]{12})`", said).group(1)
    (logged,) = [r for r in caplog.records if reference in r.getMessage()]
    assert "database went away" in str(logged.exc_info[1])
    assert "database went away" not in said and "RuntimeError" not in said
    monkeypatch.undo()
    await dpytest.message("!help")
    assert "Inkmarket bot" in sent()[0].content


async def test_a_mention_that_crashes_is_answered_by_the_message_guard(bot, server,
                                                                       monkeypatch):
    def broken(channel_id):
        raise RuntimeError("context store went away")

    monkeypatch.setattr(bot.context, "turns", broken)
    await dpytest.message(f"<@{bot.user.id}> hello there")
    (apology,) = sent()
    assert re.fullmatch(r"Something went wrong on our side; nothing was charged for it\. "
                        r"Reference: `[0-9a-f]{12}`\.", apology.content), apology.content


async def test_a_crash_in_a_command_is_answered_by_the_command_error_handler(
        bot, server, monkeypatch):
    from discordbot import selectors

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(selectors, "history_for_user", broken)
    with pytest.raises(commands.CommandInvokeError):
        await dpytest.message("!history")
    (apology,) = sent()
    assert re.fullmatch(r"Something went wrong on our side; nothing was charged for it\. "
                        r"Reference: `[0-9a-f]{12}`\.", apology.content), apology.content


async def test_messages_from_bots_are_ignored(bot, server, config):
    from discord.ext.test import backend

    other = backend.make_user("otherbot", "0042")
    other.bot = True  # another bot: answering it could start two bots talking forever
    member = backend.make_member(other, config.guilds[0])
    await dpytest.message("!help", member=member)
    assert sent() == []


async def test_outside_its_allowed_channels_the_bot_says_where_it_answers(bot, server, config):
    server.allowed_channel_ids = [424242424242424242]
    await server.asave()
    await dpytest.message("!ask What is a fjord?", channel=config.channels[0])
    (reply,) = sent()
    assert current(reply) == "⚠️ I answer only in <#424242424242424242> on this server."
    assert not await DiscordJob.objects.aexists()
