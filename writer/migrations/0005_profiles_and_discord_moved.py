from django.db import migrations


class Migration(migrations.Migration):
    """Profiles now belong to the content app, the bot's models to discordbot; tables stay."""

    dependencies = [
        ('content', '0001_initial'),
        ('discordbot', '0001_initial'),
        ('writer', '0004_discord'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='discorddailyspend',
                    name='server',
                ),
                migrations.RemoveField(
                    model_name='discordjob',
                    name='reservation',
                ),
                migrations.RemoveField(
                    model_name='discordjob',
                    name='server',
                ),
                migrations.RemoveField(
                    model_name='discordserver',
                    name='billing_user',
                ),
                migrations.DeleteModel(
                    name='GenerationProfile',
                ),
                migrations.DeleteModel(
                    name='DiscordDailySpend',
                ),
                migrations.DeleteModel(
                    name='DiscordJob',
                ),
                migrations.DeleteModel(
                    name='DiscordServer',
                ),
            ],
        ),
    ]
