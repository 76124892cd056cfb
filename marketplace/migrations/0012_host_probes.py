from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('marketplace', '0011_attempt_answered_at'),
    ]

    operations = [
        migrations.CreateModel(
            name='HostProbe',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name='ID')),
                ('host_address', models.CharField(max_length=42)),
                ('ok', models.BooleanField()),
                ('ms', models.FloatField(blank=True, null=True)),
                ('checked_at', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['host_address', 'checked_at'],
                                         name='host_probe_recent')],
            },
        ),
    ]
