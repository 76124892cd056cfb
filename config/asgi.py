"""One ASGI application: Django over HTTP, Channels consumers over WebSocket.

Once it is built, with every view imported, what start-up made (some 190,000 objects
that live as long as the process) is moved out of the garbage collector's sight
(gc.freeze): a full collection would walk all of them, a pause of 100-180 ms on the
event loop each time that every request in flight waits through. Later collections
walk only what serving made.
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

import django
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does

from config.handler import Handler  # noqa: E402

django_app = Handler()

from django.urls import get_resolver  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

get_resolver().url_patterns  # noqa: B018 (imports every view, as the first request would)
gc.collect()
gc.freeze()
