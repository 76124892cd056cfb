"""The bot against a simulated Discord: dpytest drives discord.py's own event handling
(messages, edits, reactions through discord.py's state and HTTP client); interactions
arrive through discord.py's gateway parser, and their responses (which discord.py sends
over Discord's webhook API, not its HTTP client) are recorded by a webhook adapter that
answers as Discord would."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend, callbacks
from discord.ext.test import factories as facts
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from accounts.models import User
from accounts.services import account_get_or_create
from discordbot.bot import BotCommands, InkBot
from discordbot.models import DiscordServer


@pytest.fixture
async def bot():
    # dpytest keeps its simulated members in discord.py's member cache, which discord.py
    # fills only with the members intent; the bot itself asks for the default intents
    # and message content, and reads each author from its message.
    intents = discord.Intents.default()
    intents.message_content = True
    intents.members = True
    client = InkBot(intents=intents)
    await client._async_setup_hook()
    # setup_hook also syncs the slash commands with Discord; the cog is all it adds here.
    await client.add_cog(BotCommands(client))
    dpytest.configure(client, members=["alice", "bob", "carol"])
    # dpytest swaps in its own connection state; hand it the command tree as discord.py
    # does when the tree is made, so interactions reach it.
    backend.get_state()._command_tree = client.tree
    yield client
    await dpytest.empty_queue()
    callbacks.remove_callback("edit_message")


@pytest.fixture
def config(bot):
    return dpytest.get_config()


@pytest.fixture
def payer(db):
    user = User.objects.create_user(username="server-owner", password="a-long-password-9")
    account_get_or_create(user)
    return user


@pytest.fixture
def server(config, payer):
    guild = config.guilds[0]
    return DiscordServer.objects.create(guild_id=guild.id, name=guild.name, billing_user=payer)


class Edits:
    """Every edit of a message the bot makes, with the loop's time it was made at."""

    def __init__(self):
        self.made: list[tuple[float, int, str]] = []

    async def __call__(self, channel, message, fields):
        payload = fields["params"].payload or {}
        self.made.append((asyncio.get_running_loop().time(), message.id,
                          payload.get("content")))

    def of(self, message_id: int) -> list[tuple[float, str]]:
        return [(t, content) for t, mid, content in self.made if mid == message_id]


@pytest.fixture
def edits(bot):
    recorder = Edits()
    callbacks.set_callback(recorder, "edit_message")
    return recorder


def sent() -> list[discord.Message]:
    """The messages the bot sent since the last call, oldest first."""
    out = []
    while not dpytest.sent_queue.empty():
        out.append(dpytest.sent_queue.get_nowait())
    return out


def current(message: discord.Message) -> str:
    """A message's content now, after every edit."""
    stored = backend._cur_config.messages[message.channel.id]
    return next(m for m in stored if int(m["id"]) == message.id)["content"]


async def reply_to(original: discord.Message, content: str, author) -> discord.Message:
    """`author` answers `original` with Discord's reply (a message reference)."""
    channel = original.channel
    data = facts.make_message_dict(channel, author, content=content)
    data["type"] = 19  # a reply
    data["message_reference"] = {"message_id": original.id, "channel_id": channel.id,
                                 "guild_id": channel.guild.id}
    data["referenced_message"] = facts.dict_from_message(original)
    backend.get_state().parse_message_create(data)
    backend._cur_config.messages.setdefault(channel.id, []).append(data)
    await dpytest.run_all_events()
    if not dpytest.error_queue.empty():
        raise (await dpytest.error_queue.get())[1]
    return backend.get_state()._get_message(data["id"])


class DiscordWebhooks(AsyncWebhookAdapter):
    """Discord's side of interaction responses: records each and answers with what Discord
    would return (a message payload for edits and follow-ups)."""

    def __init__(self, bot: discord.Client):
        super().__init__()
        self.bot = bot
        self.calls: list[dict] = []
        self.messages: dict[int, dict] = {}
        self._ids = itertools.count(1)

    def _message(self, channel, content, message_id=None) -> dict:
        data = facts.make_message_dict(channel, self.bot.user, content=content,
                                       id_num=message_id if message_id else -1)
        data["flags"] = 0
        self.messages[int(data["id"])] = data
        return data

    async def request(self, route, session, *, payload=None, multipart=None, files=None,
                      params=None, **kwargs):
        path, method = route.path, route.method
        record = {"method": method, "path": path, "payload": payload,
                  "t": asyncio.get_running_loop().time()}
        self.calls.append(record)
        channel = self.channel
        if path.endswith("/callback"):
            return None
        if path.endswith("/messages/@original"):
            if method == "DELETE":
                return None
            original = self.original_id or None
            data = self._message(channel, (payload or {}).get("content"), original)
            self.original_id = int(data["id"])
            return data
        if method == "POST" and path == "/webhooks/{webhook_id}/{webhook_token}":
            return self._message(channel, (payload or {}).get("content"))
        if method == "PATCH" and "/messages/" in path:
            message_id = int(route.url.rsplit("/", 1)[-1].split("?")[0])
            return self._message(channel, (payload or {}).get("content"), message_id)
        if method == "DELETE":
            return None
        raise AssertionError(f"unexpected webhook call {method} {path}")

    channel = None
    original_id = 0

    def of(self, kind: str) -> list[dict]:
        if kind == "callback":
            return [c for c in self.calls if c["path"].endswith("/callback")]
        if kind == "original":
            return [c for c in self.calls if c["path"].endswith("/@original")
                    and c["method"] == "PATCH"]
        if kind == "followup":
            return [c for c in self.calls if c["method"] == "POST"
                    and c["path"] == "/webhooks/{webhook_id}/{webhook_token}"]
        raise ValueError(kind)


@pytest.fixture
def webhooks(bot, config):
    adapter = DiscordWebhooks(bot)
    adapter.channel = config.channels[0]
    token = async_context.set(adapter)
    yield adapter
    async_context.reset(token)


_OPTION_TYPES = {str: 3, bool: 5, int: 4}


async def interact(bot, *, member, channel, name: str, permissions: int = 0, **options):
    """Deliver a slash command as Discord's gateway does and wait for its handler."""
    guild = channel.guild
    payload = {
        "id": str(facts.make_id()), "application_id": str(bot.user.id), "type": 2,
        "token": f"interaction-token-{facts.make_id()}", "version": 1,
        "guild_id": str(guild.id), "channel_id": str(channel.id),
        "channel": {"id": str(channel.id), "type": 0, "guild_id": str(guild.id),
                    "name": channel.name, "position": 0},
        "member": {"user": facts.dict_from_user(member._user),
                   "roles": [str(r.id) for r in member.roles if r != guild.default_role],
                   "joined_at": dt.datetime.now(dt.UTC).isoformat(),
                   "deaf": False, "mute": False, "flags": 0,
                   "permissions": str(permissions)},
        "data": {"id": str(facts.make_id()), "name": name, "type": 1,
                 "options": [{"name": k, "type": _OPTION_TYPES[type(v)], "value": v}
                             for k, v in options.items()]},
        "locale": "en-US", "app_permissions": "0",
    }
    backend.get_state().parse_interaction_create(payload)
    for task in list(asyncio.all_tasks()):
        if task.get_name() == "CommandTree-invoker":
            await task


async def make_role(guild, name: str) -> discord.Role:
    return backend.make_role(name, guild)


