"""The JSON API gateway, /v1 (django-ninja; OpenAPI docs at /v1/docs). See
docs/gateway.md. Every request passes gateway.api.middleware first (size limit,
key lookup, rate limit); every error has the shape of gateway.api.errors."""

from ninja import NinjaAPI

from gateway.api import errors

api = NinjaAPI(title="Inkmarket gateway", version="1", urls_namespace="gateway-api",
               docs_url="/docs", description="Text generation on the Inkmarket "
               "marketplace: authenticated by API key, rate limited by tier, billed to the "
               "wei. See docs/gateway.md.")
errors.install(api)

from gateway.api.account import router as account_router  # noqa: E402
from gateway.api.batch import router as batch_router  # noqa: E402
from gateway.api.chat import router as chat_router  # noqa: E402
from gateway.api.inference import router as inference_router  # noqa: E402
from gateway.api.models import router as models_router  # noqa: E402
from gateway.api.usage import router as usage_router  # noqa: E402

api.add_router("", inference_router)
api.add_router("", chat_router)
api.add_router("", models_router)
api.add_router("", usage_router)
api.add_router("", account_router)
api.add_router("/batch", batch_router)
