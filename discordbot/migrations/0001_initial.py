import accounts.fields
import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models


MODELS = ['discordserver', 'discorddailyspend', 'discordjob']


def move_content_types(apps, schema_editor):
    """Permissions and admin history follow the models to their new app."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="writer", model__in=MODELS).update(
        app_label="discordbot")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="discordbot", model__in=MODELS).update(
        app_label="writer")


class Migration(migrations.Migration):
    """The bot's models, moved from the writer app: only Django's record of them changes;
    their tables (db_table) and rows stay as they are."""

    initial = True

    dependencies = [
        ('writer', '0004_discord'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('accounts', '0004_lean_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='DiscordServer',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('guild_id', models.BigIntegerField(help_text="Discord's id of the server", unique=True)),
                        ('name', models.CharField(blank=True, max_length=100)),
                        ('allowed_channel_ids', models.JSONField(blank=True, default=list, help_text='Channel ids the bot answers in; empty: all')),
                        ('ask_model', models.CharField(default='smollm2-135m-instruct', max_length=100)),
                        ('code_model', models.CharField(default='smollm2-135m-instruct', max_length=100)),
                        ('summarize_model', models.CharField(default='smollm2-135m-instruct', max_length=100)),
                        ('chat_model', models.CharField(default='smollm2-135m-instruct', help_text='For answers to a mention of the bot', max_length=100)),
                        ('image_model', models.CharField(default='sdxl-turbo', max_length=100)),
                        ('image_role_ids', models.JSONField(blank=True, default=list, help_text='Members with one of these roles may make images')),
                        ('image_user_ids', models.JSONField(blank=True, default=list, help_text='These users may make images')),
                        ('daily_cap_wei', accounts.fields.WeiField(blank=True, default=1000000000000000, help_text="The most the server's jobs may cost in a day (UTC), in wei; empty: no cap", null=True)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('updated', models.DateTimeField(auto_now=True)),
                        ('billing_user', models.ForeignKey(blank=True, help_text="The user whose account pays for this server's jobs; none: the bot answers that the server has no billing account yet", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='discord_servers', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'writer_discordserver',
                        'ordering': ['name', 'guild_id'],
                    },
                ),
                migrations.CreateModel(
                    name='DiscordJob',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('user_id', models.BigIntegerField(help_text="Discord's id of who asked")),
                        ('user_name', models.CharField(blank=True, max_length=100)),
                        ('channel_id', models.BigIntegerField()),
                        ('command', models.CharField(choices=[('ask', '!ask or /ask'), ('code', '!code'), ('summarize', '!summarize'), ('chat', 'A mention'), ('image', '!image or /imagine')], max_length=10)),
                        ('prompt', models.TextField()),
                        ('full_prompt', models.TextField(help_text='What was sent to the model')),
                        ('model', models.CharField(max_length=100)),
                        ('max_tokens', models.PositiveIntegerField()),
                        ('status', models.CharField(choices=[('pending', 'Waiting for a host'), ('streaming', 'Writing'), ('done', 'Done'), ('failed', 'Failed'), ('cancelled', 'Stopped')], default='pending', max_length=10)),
                        ('text', models.TextField(blank=True)),
                        ('tokens', models.PositiveIntegerField(default=0)),
                        ('host', models.CharField(blank=True, max_length=42)),
                        ('price_cap_wei', accounts.fields.WeiField(help_text='The most a host may charge per token')),
                        ('reserved_wei', accounts.fields.WeiField(default=0)),
                        ('cost_wei', accounts.fields.WeiField(default=0)),
                        ('spend_day', models.DateField(help_text='The day whose cap the job counts against')),
                        ('error_code', models.CharField(blank=True, max_length=40)),
                        ('error_message', models.TextField(blank=True)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('finished', models.DateTimeField(blank=True, null=True)),
                        ('reservation', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='discord_job', to='accounts.reservation')),
                        ('server', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='jobs', to='discordbot.discordserver')),
                    ],
                    options={
                        'db_table': 'writer_discordjob',
                        'ordering': ['-created'],
                        'indexes': [models.Index(fields=['user_id', '-created'], name='discordjob_user_newest')],
                    },
                ),
                migrations.CreateModel(
                    name='DiscordDailySpend',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('day', models.DateField()),
                        ('committed_wei', accounts.fields.WeiField(default=0)),
                        ('server', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='spend', to='discordbot.discordserver')),
                    ],
                    options={
                        'db_table': 'writer_discorddailyspend',
                        'ordering': ['-day'],
                        'constraints': [models.UniqueConstraint(fields=('server', 'day'), name='one_spend_row_per_server_and_day')],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
