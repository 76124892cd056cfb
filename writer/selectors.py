"""Reads of the writer: a person's generations, searched and filtered; a document's versions
and the conversation a follow-up continues."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from writer.models import TYPE_CHOICES, Generation


def generation_list(*, user, query: str = "", content_type: str = "") -> QuerySet[Generation]:
    """The user's generations, newest first, whose prompt, change asked (a follow-up's) or
    text (as written or as edited) contains `query`, of one type when `content_type` names
    a known one."""
    items = Generation.objects.filter(user=user)
    query = query.strip()
    if query:
        items = items.filter(Q(prompt__icontains=query) | Q(text__icontains=query)
                             | Q(edited_text__icontains=query)
                             | Q(instruction__icontains=query))
    if content_type in dict(TYPE_CHOICES):
        items = items.filter(content_type=content_type)
    return items


def generation_get(*, user, pk) -> Generation | None:
    """The user's generation, or None when it does not exist or is someone else's."""
    try:
        return Generation.objects.filter(pk=pk, user=user).first()
    except ValidationError:  # not a UUID: a link someone mistyped
        return None


def document_versions(*, generation: Generation) -> list[Generation]:
    """Every version of the document `generation` belongs to, its first one first, in the
    order they were asked (writer.models)."""
    root = generation.document_id
    return list(Generation.objects.filter(Q(pk=root) | Q(root_id=root)).order_by("created"))


def generation_conversation(*, generation: Generation) -> list[Generation]:
    """The versions `generation` was made from, the document's first one first and
    `generation` last: the turns of its conversation (a follow-up asked of an earlier
    version leaves out the versions after that one)."""
    by_id = {version.id: version for version in document_versions(generation=generation)}
    chain = [by_id.get(generation.id, generation)]
    while chain[-1].parent_id is not None:
        chain.append(by_id[chain[-1].parent_id])
    return chain[::-1]


def generation_descendants(*, generation: Generation) -> list[Generation]:
    """`generation` and the follow-ups made from it, at any depth."""
    children: dict = {}
    for version in document_versions(generation=generation):
        children.setdefault(version.parent_id, []).append(version)
    found, todo = [], [generation]
    while todo:
        version = todo.pop()
        found.append(version)
        todo.extend(children.get(version.id, ()))
    return found
