from django.db import migrations


class Migration(migrations.Migration):
    """The gateway's models now belong to the gateway app (gateway 0001); their tables stay."""

    dependencies = [
        ('gateway', '0001_initial'),
        ('marketplace', '0007_lean_indexes'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='batchitem',
                    name='batch',
                ),
                migrations.RemoveField(
                    model_name='gatewayrequest',
                    name='api_key',
                ),
                migrations.RemoveField(
                    model_name='gatewayrequest',
                    name='user',
                ),
                migrations.DeleteModel(
                    name='Batch',
                ),
                migrations.DeleteModel(
                    name='BatchItem',
                ),
                migrations.DeleteModel(
                    name='GatewayRequest',
                ),
            ],
        ),
    ]
