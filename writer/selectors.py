"""Reads of the writer: a person's generations, searched and filtered."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from writer.models import TYPE_CHOICES, Generation


def generation_list(*, user, query: str = "", content_type: str = "") -> QuerySet[Generation]:
    """The user's generations, newest first, whose prompt or text (as written or as edited)
    contains `query`, of one type when `content_type` names a known one."""
    items = Generation.objects.filter(user=user)
    query = query.strip()
    if query:
        items = items.filter(Q(prompt__icontains=query) | Q(text__icontains=query)
                             | Q(edited_text__icontains=query))
    if content_type in dict(TYPE_CHOICES):
        items = items.filter(content_type=content_type)
    return items


def generation_get(*, user, pk) -> Generation | None:
    """The user's generation, or None when it does not exist or is someone else's."""
    try:
        return Generation.objects.filter(pk=pk, user=user).first()
    except ValidationError:  # not a UUID: a link someone mistyped
        return None
