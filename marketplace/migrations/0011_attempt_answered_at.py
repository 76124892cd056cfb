from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('marketplace', '0010_verification_records'),
    ]

    operations = [
        migrations.AddField(
            model_name='jobattempt',
            name='answered_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
