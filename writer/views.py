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
from writer.forms import EditForm, GenerateForm
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


@login_required
def detail(request, pk):
    generation = _own(request, pk)
    return render(request, "writer/detail.html", {
        "generation": generation, "form": EditForm(initial={"text": generation.final_text})})


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
