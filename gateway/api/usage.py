"""GET /v1/usage: the caller's tokens, cost and requests per model and per day."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from accounts.models import Scope
from gateway.api.auth import KEY_AUTH, require_scope
from gateway.api.errors import error_responses
from gateway.api.schemas import UsageOut
from gateway.db import db
from gateway.usage import usage_for_user

router = Router(tags=["usage"], auth=KEY_AUTH)


class UsageQuery(Schema):
    days: int = Field(30, ge=1, le=366, description="How many days back")


@router.get("/usage", response={200: UsageOut, **error_responses(400, 403)},
            summary="Usage per model and per day")
async def usage(request: HttpRequest, query: Query[UsageQuery]):
    key = require_scope(request, Scope.USAGE)
    return await db(usage_for_user, user_id=key.user_id, days=query.days)
