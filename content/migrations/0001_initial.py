from django.db import migrations, models


MODELS = ['generationprofile']


def move_content_types(apps, schema_editor):
    """Permissions and admin history follow the models to their new app."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="writer", model__in=MODELS).update(
        app_label="content")


def move_content_types_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="content", model__in=MODELS).update(
        app_label="writer")


class Migration(migrations.Migration):
    """Generation profiles, moved from the writer app: only Django's record of them
    changes; the table (db_table) and its rows stay as they are."""

    initial = True

    dependencies = [
        ('writer', '0004_discord'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='GenerationProfile',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('content_type', models.CharField(choices=[('blog', 'Blog post'), ('email', 'Email'), ('code', 'Code'), ('summary', 'Summary')], max_length=10)),
                        ('length', models.CharField(choices=[('short', 'Short'), ('medium', 'Medium'), ('long', 'Long')], max_length=10)),
                        ('model', models.CharField(default='smollm2-135m-instruct', max_length=100)),
                        ('max_tokens', models.PositiveIntegerField()),
                        ('temperature', models.FloatField(default=0.7)),
                    ],
                    options={
                        'db_table': 'writer_generationprofile',
                        'ordering': ['content_type', 'length'],
                        'constraints': [models.UniqueConstraint(fields=('content_type', 'length'), name='one_profile_per_type_and_length')],
                    },
                ),
            ],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
