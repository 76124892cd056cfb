"""The Discord bot's servers, their daily spending and their jobs. The tables keep the
names they had in the writer app (db_table)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.fields import WeiField
from content.models import Status

DEFAULT_TEXT_MODEL = "smollm2-135m-instruct"
DEFAULT_IMAGE_MODEL = "sdxl-turbo"
DEFAULT_DAILY_CAP_WEI = 10**15


class DiscordServer(models.Model):
    """A Discord server (guild) the bot serves: where it answers, with which models, who
    may make images, how much it may spend a day, and whose account pays."""

    guild_id = models.BigIntegerField(unique=True, help_text="Discord's id of the server")
    name = models.CharField(max_length=100, blank=True)
    billing_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="discord_servers",
        help_text="The user whose account pays for this server's jobs; none: the bot "
                  "answers that the server has no billing account yet")
    allowed_channel_ids = models.JSONField(
        default=list, blank=True, help_text="Channel ids the bot answers in; empty: all")
    ask_model = models.CharField(max_length=100, default=DEFAULT_TEXT_MODEL)
    code_model = models.CharField(max_length=100, default=DEFAULT_TEXT_MODEL)
    summarize_model = models.CharField(max_length=100, default=DEFAULT_TEXT_MODEL)
    chat_model = models.CharField(max_length=100, default=DEFAULT_TEXT_MODEL,
                                  help_text="For answers to a mention of the bot")
    image_model = models.CharField(max_length=100, default=DEFAULT_IMAGE_MODEL)
    image_role_ids = models.JSONField(default=list, blank=True,
                                      help_text="Members with one of these roles may make images")
    image_user_ids = models.JSONField(default=list, blank=True,
                                      help_text="These users may make images")
    daily_cap_wei = WeiField(null=True, blank=True, default=DEFAULT_DAILY_CAP_WEI,
                             help_text="The most the server's jobs may cost in a day (UTC), "
                                       "in wei; empty: no cap")
    max_price_per_token_wei = WeiField(
        null=True, blank=True, help_text="The most the server pays a host per token, in wei: "
                                         "dearer hosts are not used; empty: no limit beyond "
                                         "the marketplace's own (docs/trust.md, Prices)")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "writer_discordserver"
        ordering = ["name", "guild_id"]

    def __str__(self) -> str:
        return self.name or str(self.guild_id)

    def model_for(self, command: str) -> str:
        return getattr(self, f"{command}_model")


class DiscordDailySpend(models.Model):
    """What a server's jobs have committed on one day: the worst case of those running and
    the charge of those done. Changed in the same transactions as the ledger, under this
    row's lock, so the daily cap holds against concurrent jobs."""

    server = models.ForeignKey(DiscordServer, on_delete=models.CASCADE, related_name="spend")
    day = models.DateField()
    committed_wei = WeiField(default=0)

    class Meta:
        db_table = "writer_discorddailyspend"
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["server", "day"],
                                               name="one_spend_row_per_server_and_day")]

    def __str__(self) -> str:
        return f"{self.server} {self.day}: {self.committed_wei} wei"


class DiscordCommand(models.TextChoices):
    ASK = "ask", "!ask or /ask"
    CODE = "code", "!code"
    SUMMARIZE = "summarize", "!summarize"
    CHAT = "chat", "A mention"
    IMAGE = "image", "!image or /imagine"


class DiscordJob(models.Model):
    """One request to the bot that reached the marketplace; a user's newest ones are kept
    (settings.DISCORD_HISTORY_KEEP) for !history. Its id is also the marketplace job's."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    server = models.ForeignKey(DiscordServer, on_delete=models.CASCADE, related_name="jobs")
    user_id = models.BigIntegerField(help_text="Discord's id of who asked")
    user_name = models.CharField(max_length=100, blank=True)
    channel_id = models.BigIntegerField()
    command = models.CharField(max_length=10, choices=DiscordCommand.choices)
    prompt = models.TextField()
    full_prompt = models.TextField(help_text="What was sent to the model")
    model = models.CharField(max_length=100)
    max_tokens = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    text = models.TextField(blank=True)
    tokens = models.PositiveIntegerField(default=0)
    host = models.CharField(max_length=42, blank=True)
    price_cap_wei = WeiField(help_text="The most a host may charge per token")
    reserved_wei = WeiField(default=0)
    cost_wei = WeiField(default=0)
    spend_day = models.DateField(help_text="The day whose cap the job counts against")
    reservation = models.OneToOneField("accounts.Reservation", null=True, blank=True,
                                       on_delete=models.SET_NULL, related_name="discord_job")
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "writer_discordjob"
        ordering = ["-created"]
        indexes = [models.Index(fields=["user_id", "-created"], name="discordjob_user_newest")]

    def __str__(self) -> str:
        return f"{self.command}: {self.prompt[:40]}"
