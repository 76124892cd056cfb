from django.apps import AppConfig


class DiscordBotConfig(AppConfig):
    name = "discordbot"
    verbose_name = "Discord bot"
