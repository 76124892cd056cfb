from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0005_funds")]

    operations = [
        migrations.AddField(
            model_name="account",
            name="till",
            field=models.CharField(blank=True, default="", max_length=16),
        ),
    ]
