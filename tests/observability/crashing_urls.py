"""The product's URLs and one that fails unexpectedly, for the 500 page's test."""

from django.urls import path

from config.urls import handler500, urlpatterns  # noqa: F401  (the handler is the product's)


def crash(request):
    raise RuntimeError("http://127.0.0.1:9/key-SECRET123 went away")


urlpatterns = [*urlpatterns, path("crash", crash)]
