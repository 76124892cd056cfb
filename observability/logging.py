"""Structured JSON logs carrying the request id and the job id of the work in hand, and
in a Celery worker the task's name and id.

The ids live in context variables, so they follow a request or a job across awaits and
into the threads Django runs sync code in (asgiref copies the context).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _current_task():
    """The Celery task this line is logged from, if any (Celery keeps it per thread)."""
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is a dependency of the product
        return None
    task = current_task._get_current_object() if current_task else None
    return task if task is not None and getattr(task.request, "id", None) else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        if (job_id := job_id_var.get()) is not None:
            entry["job_id"] = job_id
        task = _current_task()
        if task is not None:
            entry["task"] = task.name
            entry["task_id"] = task.request.id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RequestIdMiddleware:
    """Takes X-Request-ID from the caller (or makes one), logs the request, echoes the id."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        self.log = logging.getLogger("inkmarket.request")

    def _begin(self, request) -> tuple[contextvars.Token, str, float]:
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if 0 < len(supplied) <= 64 and supplied.isprintable() else (
            uuid.uuid4().hex
        )
        request.request_id = request_id
        return request_id_var.set(request_id), request_id, time.perf_counter()

    def _end(self, request, response, token, request_id: str, started: float):
        response["X-Request-ID"] = request_id
        self.log.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"status": response.status_code,
                   "ms": round((time.perf_counter() - started) * 1000, 1)},
        )
        request_id_var.reset(token)
        return response

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        token, request_id, started = self._begin(request)
        response = self.get_response(request)
        return self._end(request, response, token, request_id, started)

    async def __acall__(self, request):
        token, request_id, started = self._begin(request)
        response = await self.get_response(request)
        return self._end(request, response, token, request_id, started)
