"""A host node (`manage.py runhost`): no database or Redis of the product's; a real chain.
It shares only the protocol and the chain layer with the product, so none of the
product's services are required here."""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import CHAIN_RPC_URL, DEBUG, SECRET_KEY

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off on a host")
if not CHAIN_RPC_URL:
    raise ImproperlyConfigured("CHAIN_RPC_URL must be set on a host (there is no devnet)")
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters")
