import accounts.fields
import django.db.models.deletion
import uuid
from django.conf import settings
from django.db import migrations, models


MODELS = ['batch', 'batchitem', 'gatewayrequest']


def move_content_types(apps, schema_editor):
    """Permissions and admin history follow the models to their new app."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="marketplace", model__in=MODELS).update(
        app_label="gateway")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="gateway", model__in=MODELS).update(
        app_label="marketplace")


class Migration(migrations.Migration):
    """The gateway's models, moved from the marketplace app: only Django's record of them
    changes; their tables (db_table) and rows stay as they are."""

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('accounts', '0004_lean_indexes'),
        ('marketplace', '0007_lean_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Batch',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('state', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('completed', 'Completed')], db_index=True, default='queued', max_length=12)),
                        ('total', models.PositiveIntegerField()),
                        ('succeeded', models.PositiveIntegerField(default=0)),
                        ('failed', models.PositiveIntegerField(default=0)),
                        ('cost_wei', accounts.fields.WeiField(default=0, help_text='What the succeeded items were charged.')),
                        ('webhook_url', models.URLField(blank=True, max_length=500)),
                        ('webhook_secret', models.CharField(blank=True, help_text='HMAC-SHA256 key the webhook is signed with', max_length=128)),
                        ('created', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='batches', to='accounts.apikey')),
                        ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='batches', to=settings.AUTH_USER_MODEL)),
                        ('webhook', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='marketplace.webhookdelivery')),
                    ],
                    options={
                        'verbose_name_plural': 'batches',
                        'db_table': 'marketplace_batch',
                        'ordering': ['-created'],
                    },
                ),
                migrations.CreateModel(
                    name='BatchItem',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('index', models.PositiveSmallIntegerField()),
                        ('model', models.CharField(max_length=100)),
                        ('prompt', models.TextField()),
                        ('params', models.JSONField(default=dict, help_text='max_tokens, temperature')),
                        ('state', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], db_index=True, default='queued', max_length=12)),
                        ('text', models.TextField(blank=True)),
                        ('tokens', models.PositiveIntegerField(default=0)),
                        ('cost_wei', accounts.fields.WeiField(default=0)),
                        ('cached', models.BooleanField(default=False)),
                        ('finish_reason', models.CharField(blank=True, max_length=20)),
                        ('host', models.CharField(blank=True, max_length=300)),
                        ('error_code', models.CharField(blank=True, max_length=40)),
                        ('error_message', models.TextField(blank=True)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('job_id', models.UUIDField(blank=True, help_text='The marketplace job, if any.', null=True)),
                        ('lease_until', models.DateTimeField(blank=True, null=True)),
                        ('not_before', models.DateTimeField(blank=True, help_text='A retry waits until then.', null=True)),
                        ('created', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('batch', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='items', to='gateway.batch')),
                    ],
                    options={
                        'db_table': 'marketplace_batchitem',
                        'ordering': ['batch', 'index'],
                        'indexes': [models.Index(fields=['state', 'lease_until'], name='batch_item_lease')],
                        'constraints': [models.UniqueConstraint(fields=('batch', 'index'), name='batch_item_index_unique')],
                    },
                ),
                migrations.CreateModel(
                    name='GatewayRequest',
                    fields=[
                        ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        ('endpoint', models.CharField(help_text='inference, chat, batch, …', max_length=40)),
                        ('model', models.CharField(max_length=100)),
                        ('status', models.CharField(choices=[('running', 'Running'), ('done', 'Done'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='running', max_length=12)),
                        ('max_tokens', models.PositiveIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveIntegerField(default=0)),
                        ('tokens', models.PositiveIntegerField(default=0, help_text='Tokens generated (billed).')),
                        ('cost_wei', accounts.fields.WeiField(default=0, help_text='What the caller was charged.')),
                        ('cached', models.BooleanField(default=False)),
                        ('stream', models.BooleanField(default=False)),
                        ('finish_reason', models.CharField(blank=True, max_length=20)),
                        ('error_code', models.CharField(blank=True, max_length=40)),
                        ('error_message', models.TextField(blank=True)),
                        ('text', models.TextField(blank=True, help_text='The result, for polling.')),
                        ('host', models.CharField(blank=True, max_length=200)),
                        ('job_id', models.CharField(blank=True, help_text="The marketplace job, or the upstream's completion id.", max_length=100)),
                        ('reference', models.CharField(blank=True, help_text='The reservation this request is billed through.', max_length=200)),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('ttft_ms', models.FloatField(blank=True, null=True)),
                        ('duration_ms', models.FloatField(blank=True, null=True)),
                        ('api_key', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='gateway_requests', to='accounts.apikey')),
                        ('user', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='gateway_requests', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'marketplace_gatewayrequest',
                        'ordering': ['-created_at'],
                        'indexes': [models.Index(fields=['user', 'created_at'], name='gateway_req_user_created'), models.Index(fields=['reference'], name='gateway_req_reference')],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
