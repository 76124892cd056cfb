"""Production: PostgreSQL, Redis, TLS in front. Passes `manage.py check --deploy` cleanly."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int
from config.settings.base import *  # noqa: F403
from config.settings.base import DATABASE_URL, DEBUG, REDIS_URL, SECRET_KEY

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production")
if not DATABASE_URL:
    raise ImproperlyConfigured("DATABASE_URL must be set in production")
if not REDIS_URL:
    raise ImproperlyConfigured("REDIS_URL must be set in production")
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters of real randomness")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
