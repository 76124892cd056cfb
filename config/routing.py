"""WebSocket routes, gathered from the apps that serve them."""

from writer.routing import websocket_urlpatterns as writer_routes

websocket_urlpatterns = [*writer_routes]
