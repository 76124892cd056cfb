"""whitenoise's middleware, able to run async.

Django runs a request's middleware chain async only if every middleware in it can: a
single sync-only one (whitenoise 6's is) hands each request to a thread of its own, and
under ASGI that thread opens a database connection of its own for every request. Looking
a path up in whitenoise's table is a dict lookup (a stat call with autorefresh), so the
async path does it inline and serves the file the same way.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from whitenoise.middleware import WhiteNoiseMiddleware


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, **kwargs):
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        path = request.path_info
        static_file = self.find_file(path) if self.autorefresh else self.files.get(path)
        if static_file is not None:
            response = self.serve(static_file, request)
            if response.streaming and not response.is_async:
                # Django's ASGI handler would read a sync iterator in a thread, warning
                # each time; the files are small, so read them on the loop.
                response.streaming_content = _chunks(response.streaming_content)
            return response
        return await self.get_response(request)


async def _chunks(iterator):
    for chunk in iterator:
        yield chunk
