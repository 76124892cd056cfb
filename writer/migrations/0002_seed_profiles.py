from django.db import migrations

MAX_TOKENS = {
    "blog": {"short": 256, "medium": 512, "long": 1024},
    "email": {"short": 128, "medium": 256, "long": 512},
    "code": {"short": 256, "medium": 512, "long": 1024},
    "summary": {"short": 96, "medium": 192, "long": 384},
}
TEMPERATURE = {"blog": 0.8, "email": 0.6, "code": 0.2, "summary": 0.3}


def seed(apps, schema_editor):
    Profile = apps.get_model("writer", "GenerationProfile")
    for content_type, lengths in MAX_TOKENS.items():
        for length, tokens in lengths.items():
            Profile.objects.get_or_create(
                content_type=content_type, length=length,
                defaults={"model": "smollm2-135m-instruct", "max_tokens": tokens,
                          "temperature": TEMPERATURE[content_type]})


class Migration(migrations.Migration):
    dependencies = [("writer", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
