from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """The product's user. Custom from the first migration so it can grow without pain."""

    email = models.EmailField("email address", blank=True)

    class Meta:
        db_table = "accounts_user"
