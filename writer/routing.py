from django.urls import path

from writer.consumers import GenerationConsumer

websocket_urlpatterns = [
    path("ws/generation/<uuid:pk>/", GenerationConsumer.as_asgi()),
]
