from django.apps import AppConfig


class WriterConfig(AppConfig):
    name = "writer"
    verbose_name = "Writing assistant"
