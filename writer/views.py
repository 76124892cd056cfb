"""The writer's pages. Views parse input, call a service, render."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts import money
from accounts.errors import InsufficientFunds
from content.postprocess import process, to_markdown
from writer import runner, selectors, services
from writer.conversation import ConversationTooLong
from writer.forms import EditForm, FollowupForm, GenerateForm
from writer.models import TYPE_CHOICES, Generation

# Templates read request.user lazily, a database query: async views render in a thread.
arender = sync_to_async(render)


def home(request):
    if not request.user.is_authenticated:
        return render(request, "home.html")
    initial = {}
    if reuse := request.GET.get("reuse"):
        source = selectors.generation_get(user=request.user, pk=reuse)
        if source:
            initial = {"content_type": source.content_type, "style": source.style,
                       "length": source.length, "prompt": source.prompt}
    return render(request, "writer/generate.html", {"form": GenerateForm(initial=initial)})


async def estimate(request):
    form = GenerateForm(request.GET)
    form.is_valid()  # the estimate needs only type, length and the advanced fields
    data = form.cleaned_data
    content_type = data.get("content_type") or "blog"
    length = data.get("length") or "medium"
    result = await services.estimate_generation(
        content_type, length, model=data.get("model") or None,
        max_tokens=data.get("max_tokens") or None, user=await request.auser(),
        max_price_per_token=data.get("max_price_per_token"))
    return await arender(request, "writer/_estimate.html", {"estimate": result})


async def generate(request):
    if request.method != "POST":
        return redirect("home")
    user = await request.auser()
    if not user.is_authenticated:
        return redirect("login")
    form = GenerateForm(request.POST)
    if not form.is_valid():
        return await arender(request, "writer/generate.html", {"form": form}, status=400)
    data = form.cleaned_data
    estimate = await services.estimate_generation(
        data["content_type"], data["length"], model=data["model"] or None,
        max_tokens=data["max_tokens"], user=user,
        max_price_per_token=data["max_price_per_token"])
    if estimate.above_ceiling:
        form.add_error("max_price_per_token",
                       f"No host serves {estimate.model} at "
                       f"{money.price_text(estimate.ceiling_wei)} per token or less; the "
                       f"cheapest asks {money.price_text(estimate.cheapest_wei)}.")
        return await arender(request, "writer/generate.html", {"form": form}, status=503)
    try:
        generation = await sync_to_async(services.generation_create)(
            user=user, content_type=data["content_type"], style=data["style"],
            length=data["length"], prompt=data["prompt"], model=data["model"] or None,
            max_tokens=data["max_tokens"], temperature=data["temperature"],
            price_cap_wei=estimate.price_cap_wei)
    except InsufficientFunds as exc:
        form.add_error(None, f"Your balance ({money.coin_detail(exc.available_wei)}) does "
                             "not cover this request's worst case "
                             f"({money.coin_detail(exc.required_wei)}). Choose a "
                             "shorter length or top up your balance.")
        return await arender(request, "writer/generate.html", {"form": form}, status=402)
    except services.NoHosts as exc:
        form.add_error(None, f"No host on the network serves {exc.model} right now. Start "
                             "the local network (make run) or choose another model under "
                             "Advanced.")
        return await arender(request, "writer/generate.html", {"form": form}, status=503)
    if not generation.cached:
        runner.generation_start(generation.id)
    return redirect("generation", pk=generation.id)


def _own(request, pk) -> Generation:
    return get_object_or_404(Generation, pk=pk, user=request.user)


def _detail_context(generation: Generation, followup_form: FollowupForm | None = None) -> dict:
    versions = selectors.document_versions(generation=generation)
    numbers = {version.id: number for number, version in enumerate(versions, 1)}
    for before, version in zip([None, *versions], versions, strict=False):
        # A change asked of an earlier version than the one listed just before it.
        version.branched_from = numbers.get(version.parent_id) \
            if version.parent_id and (before is None or before.id != version.parent_id) \
            else None
    return {"generation": generation,
            "form": EditForm(initial={"text": generation.final_text}),
            "versions": versions if len(versions) > 1 else [],
            "followup_form": followup_form}


@login_required
def detail(request, pk):
    return render(request, "writer/detail.html", _detail_context(_own(request, pk)))


# A refusal's HTTP status: a version not ready to be changed conflicts with the request.
_REFUSED_STATUS = {"STILL_WRITING": 409, "NO_TEXT": 409}


async def followup(request, pk):
    """Ask a change of a finished version: a new generation in the document's
    conversation (writer.conversation), streamed on its own page like a first one."""
    if request.method != "POST":
        return redirect("generation", pk=pk)
    user = await request.auser()
    if not user.is_authenticated:
        return redirect("login")
    # Another user's piece is indistinguishable from one that does not exist.
    parent = await Generation.objects.filter(pk=pk, user=user).afirst()
    if parent is None:
        raise Http404("no such piece")
    form = FollowupForm(request.POST, content_type=parent.content_type)

    async def refused(status: int) -> HttpResponse:
        context = await sync_to_async(_detail_context)(parent, form)
        return await arender(request, "writer/detail.html", context, status=status)

    if not form.is_valid():
        return await refused(400)
    not_ready = services.followup_not_ready(parent)
    if not_ready is not None:  # before asking the hosts for prices: it cannot run anyway
        form.add_error(None, not_ready.message)
        return await refused(_REFUSED_STATUS[not_ready.code])
    estimate = await services.estimate_generation(
        parent.content_type, parent.length, model=parent.model,
        max_tokens=parent.max_tokens, user=user)
    try:
        generation = await sync_to_async(services.generation_followup)(
            user=user, parent=parent, instruction=form.cleaned_data["change"],
            price_cap_wei=estimate.price_cap_wei)
    except services.FollowupRefused as exc:
        form.add_error(None, exc.message)
        return await refused(_REFUSED_STATUS.get(exc.code, 400))
    except ConversationTooLong as exc:
        form.add_error(None, f"This piece and its request are too long to ask a change of "
                             f"({exc.chars} characters with the change; at most "
                             f"{exc.limit}). Shorten the text with an edit first.")
        return await refused(400)
    except InsufficientFunds as exc:
        form.add_error(None, f"Your balance ({money.coin_detail(exc.available_wei)}) does "
                             "not cover this change's worst case "
                             f"({money.coin_detail(exc.required_wei)}). Top up your "
                             "balance first.")
        return await refused(402)
    except services.NoHosts as exc:
        form.add_error(None, f"No host on the network serves {exc.model} right now. Try "
                             "again in a little while.")
        return await refused(503)
    if not generation.cached:
        runner.generation_start(generation.id)
    return redirect("generation", pk=generation.id)


@login_required
@require_POST
def save_edit(request, pk):
    generation = _own(request, pk)
    form = EditForm(request.POST)
    if form.is_valid():
        services.generation_save_edit(generation=generation, text=form.cleaned_data["text"])
        messages.success(request, "Saved.")
    return redirect("generation", pk=pk)


@login_required
def export_markdown(request, pk):
    generation = _own(request, pk)
    if generation.is_live:
        raise Http404("still being written")
    text = generation.final_text
    body = to_markdown(generation.content_type, text,
                       generation.processed or process(generation.content_type, text,
                                                         prompt=generation.prompt))
    response = HttpResponse(body, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{generation.content_type}-' \
                                      f'{str(generation.id)[:8]}.md"'
    return response


@login_required
@require_POST
def delete(request, pk):
    services.generation_delete(generation=_own(request, pk))
    messages.success(request, "Deleted.")
    return redirect("history")


@login_required
def history(request):
    query = request.GET.get("q", "").strip()
    kind = request.GET.get("type", "")
    items = selectors.generation_list(user=request.user, query=query, content_type=kind)
    page = Paginator(items, 20).get_page(request.GET.get("page"))
    return render(request, "writer/history.html", {"page": page, "query": query, "kind": kind,
                                                   "types": TYPE_CHOICES})
