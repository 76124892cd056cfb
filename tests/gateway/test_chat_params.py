"""OpenAI's chat parameters, each sent by the official `openai` package to a real gateway
process: honoured end to end (through a real host on the marketplace, or passed on to an
upstream: llama-cpp-python's own OpenAI-compatible server on the bundled model, or a tiny
server that records what it got), or refused with a 400 that names the parameter."""


import openai
import pytest

from accounts.selectors import ledger_invariant_violations
from accounts.tiers import price_for
from gateway.chat import StopCutter, chat_options, cut_at_stop
from gateway.errors import GatewayError
from gateway.models import GatewayRequest
from marketplace.models import VerificationRecord, VerificationState
from tests.conftest import MODEL
from tests.gateway.conftest import CREDIT, network_env, nonce

pytestmark = pytest.mark.django_db(transaction=True)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def refused(call, param: str, code: str = "UNSUPPORTED_PARAMETER") -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        call()
    assert bad.value.status_code == 400
    assert bad.value.body["code"] == code
    assert bad.value.body["param"] == param
    assert bad.value.param == param  # where the openai package reads it
    assert param in bad.value.body["message"]


def streamed(stream) -> tuple[str, list, object, str | None]:
    """The text, the logprobs entries, the usage and the finish reason of a stream."""
    text, entries, usage, finish = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            if choice.logprobs is not None and choice.logprobs.content:
                entries.extend(choice.logprobs.content)
            finish = choice.finish_reason or finish
    return "".join(text), entries, usage, finish


# ---- Without a server --------------------------------------------------------------------


def test_the_stop_cutter_holds_back_what_may_begin_a_stop_sequence():
    cutter = StopCutter(("END", "\n\n"))
    assert cutter.feed("one E") == "one "  # "E" may begin END
    assert cutter.feed("N") == ""
    assert cutter.feed("ough") == "ENough"  # it did not
    assert cutter.feed(" two\n") == " two"
    assert cutter.feed("\nthree") == ""
    assert cutter.stopped and cutter.feed("more") == "" and cutter.flush() == ""
    cutter = StopCutter(("###",))
    assert cutter.feed("a ##") == "a " and cutter.flush() == "##"
    assert cut_at_stop("a. b. c.", ("b", ".")) == ("a", True)
    assert cut_at_stop("abc", ("x",)) == ("abc", False)


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"seed": 7}, "seed", "UNSUPPORTED_PARAMETER"),
    ({"n": 2}, "n", "UNSUPPORTED_PARAMETER"),
    ({"n": 0}, "n", "INVALID_PARAMETER"),
    ({"logprobs": True, "top_logprobs": 1}, "top_logprobs", "UNSUPPORTED_PARAMETER"),
    ({"top_logprobs": 0}, "top_logprobs", "INVALID_PARAMETER"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "INVALID_PARAMETER"),
    ({"presence_penalty": 0.5}, "presence_penalty", "UNSUPPORTED_PARAMETER"),
    ({"frequency_penalty": -1}, "frequency_penalty", "UNSUPPORTED_PARAMETER"),
    ({"frequency_penalty": 2.5}, "frequency_penalty", "INVALID_PARAMETER"),
    ({"response_format": {"type": "json_object"}}, "response_format",
     "UNSUPPORTED_PARAMETER"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools",
     "UNSUPPORTED_PARAMETER"),
    ({"tool_choice": "none"}, "tool_choice", "UNSUPPORTED_PARAMETER"),
    ({"functions": [{"name": "f"}]}, "functions", "UNSUPPORTED_PARAMETER"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "INVALID_PARAMETER"),
    ({"stop": [""]}, "stop", "INVALID_PARAMETER"),
    ({"stop": "x" * 201}, "stop", "INVALID_PARAMETER"),
    ({"user": "u" * 257}, "user", "INVALID_PARAMETER"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "INVALID_PARAMETER"),
    ({"top_p": 0.5}, "top_p", "UNSUPPORTED_PARAMETER"),
    ({"top_p": 1}, "top_p", "UNSUPPORTED_PARAMETER"),
    ({"top_p": 1.5}, "top_p", "INVALID_PARAMETER"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "UNSUPPORTED_PARAMETER"),
])
def test_each_parameter_the_marketplace_cannot_honour_is_refused_by_name(fields, param, code):
    with pytest.raises(GatewayError) as refusal:
        chat_options(fields, stream=False, upstream=False)
    assert (refusal.value.code, refusal.value.extra) == (code, {"param": param})


def test_the_parameters_that_change_nothing_on_the_marketplace_are_accepted():
    options = chat_options({"n": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
                            "response_format": {"type": "text"}, "user": "u-1",
                            "logit_bias": {},
                            "stream_options": {"include_usage": False}, "stop": "\n"},
                           stream=True, upstream=False)
    assert options.stop == ("\n",) and options.user == "u-1"
    assert options.include_usage is False and not options.passed


# ---- Through the marketplace: a real host runs the bundled model --------------------------


def test_the_marketplace_honours_stop_logprobs_user_and_usage(network, servers, alice):
    network.start_hosts({"host-1": 10**9})
    url = servers.start(network_env(network))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    messages = ask(f"Write three short sentences about the sea. ({nonce()})")
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40,
                                           temperature=0, logprobs=True, user="end-user-7")
    text = whole.choices[0].message.content
    entries = whole.choices[0].logprobs.content
    # One entry a token, the host's own log-probabilities, making the text.
    assert len(entries) == whole.usage.completion_tokens > 5
    assert "".join(e.token for e in entries) == text
    assert all(-50 < e.logprob <= 0 and e.top_logprobs == [] for e in entries)

    # A stop sequence from the middle of that text: the same greedy text, cut before it.
    words = text.split()
    stop = " " + words[len(words) // 2]
    before = text[:text.index(stop)]
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=40,
                                         temperature=0, stop=[stop, "@@@"])
    assert cut.choices[0].message.content == before
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < whole.usage.completion_tokens

    got, streamed_entries, usage, finish = streamed(client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=40, temperature=0, stop=stop,
        logprobs=True, stream=True))
    assert got == before and finish == "stop"
    assert usage is not None and usage.completion_tokens >= len(streamed_entries) > 0
    assert "".join(e.token for e in streamed_entries).startswith(before)

    got, _, usage, _ = streamed(client.chat.completions.create(
        model=MODEL, messages=ask(f"Say hi. ({nonce()})"), max_tokens=6, temperature=0,
        stream=True, stream_options={"include_usage": False}))
    assert got and usage is None

    records = list(GatewayRequest.objects.filter(endpoint="chat").order_by("created_at"))
    assert [r.status for r in records] == ["done"] * 4
    assert records[0].end_user == "end-user-7" and records[1].end_user == ""
    assert records[1].text == before and records[1].finish_reason == "stop"
    # Billed to the wei for every token the host sent, past the stop too.
    assert [r.tokens for r in records[:2]] == [whole.usage.completion_tokens,
                                              cut.usage.completion_tokens]
    # The verifier re-scored every job, those cut at a stop too, and passed the honest host.
    checks = list(VerificationRecord.objects.values_list("state", flat=True))
    assert checks == [VerificationState.PASSED] * 4
    spent = sum(price_for("free", 10**9, r.tokens).charge_wei for r in records)
    assert spent == sum(int(r.cost_wei) for r in records)
    assert alice.account.balance_wei == CREDIT - spent
    assert ledger_invariant_violations() == []


def test_the_marketplace_refuses_by_name_through_the_openai_client(servers, alice):
    url = servers.start()
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)

    def chat(**extra):
        return lambda: client.chat.completions.create(model=MODEL, messages=ask("hi"),
                                                      max_tokens=4, **extra)

    refused(chat(seed=1), "seed")
    refused(chat(n=3), "n")
    refused(chat(logprobs=True, top_logprobs=2), "top_logprobs")
    refused(chat(presence_penalty=1.0), "presence_penalty")
    refused(chat(frequency_penalty=1.0), "frequency_penalty")
    refused(chat(response_format={"type": "json_object"}), "response_format")
    refused(chat(tools=[{"type": "function", "function": {"name": "now",
                                                          "parameters": {}}}]), "tools")
    refused(chat(stream_options={"include_usage": True}), "stream_options",
            "INVALID_PARAMETER")
    refused(chat(stop=["a", "b", "c", "d", "e"]), "stop", "INVALID_PARAMETER")
    refused(chat(top_p=0.9), "top_p")  # the tenth request: the free tier's limit a minute
    assert not GatewayRequest.objects.exists()  # refused before anything was reserved


# ---- Upstream mode: llama-cpp-python's server applies its own chat template --------------



def test_upstream_chat_goes_to_the_upstreams_chat_endpoint_with_its_parameters(
        llama_server, servers, alice):
    url = servers.start({"GATEWAY_UPSTREAM_URL": llama_server})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    direct = openai.OpenAI(base_url=f"{llama_server}/v1", api_key="none", max_retries=0)
    messages = [{"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": f"And of Italy? ({nonce()})"}]
    same = {"model": MODEL, "messages": messages, "max_tokens": 24, "temperature": 0}

    def answer(asked: dict) -> str:
        return direct.chat.completions.create(**asked).choices[0].message.content

    def upstreams_answer(asked: dict) -> str:
        """Ours, and the upstream's own answers asked straight before and after it: at
        temperature 0 the server's reuse of its cached prompt (a request after the same
        prompt) can change a greedy choice from a fresh evaluation, so ours must be one
        of them."""
        before = answer(asked)
        ours = client.chat.completions.create(**asked).choices[0].message.content
        assert ours in {before, answer(asked)}, (asked, ours, before)
        return ours

    # The messages reach the upstream as they are: its own template, its own answer.
    expected = direct.chat.completions.create(**same)
    ours = client.chat.completions.create(**same)
    answers = {expected.choices[0].message.content, answer(same)}
    assert ours.choices[0].message.content in answers
    if ours.choices[0].message.content == expected.choices[0].message.content:
        assert ours.usage.completion_tokens == expected.usage.completion_tokens
    # With a `user`, a request is not served from the cache: the upstream streams these.
    got, _, usage, finish = streamed(client.chat.completions.create(**same, stream=True,
                                                                    user="a"))
    assert got in answers
    if got == expected.choices[0].message.content:
        assert usage.completion_tokens == expected.usage.completion_tokens
        assert finish == expected.choices[0].finish_reason
    got, _, usage, _ = streamed(client.chat.completions.create(
        **same, stream=True, stream_options={"include_usage": False}, user="b"))
    assert got in answers and usage is None

    # stop, penalties, JSON mode (a grammar the upstream samples by): the upstream's own
    # answer to them. (A seed is passed on as sent, tested below; this server's sampling
    # at a temperature above 0 is not repeatable even with one.)
    formatted = {**same, "messages": ask(f"Give a JSON object with a key colour. ({nonce()})"),
                 "max_tokens": 64}
    for extra in ({"stop": [" "]}, {"presence_penalty": 1.5, "frequency_penalty": 1.5},
                  {**formatted, "response_format": {"type": "json_object"}}):
        upstreams_answer({**same, **extra})

    json_mode = client.chat.completions.create(**formatted,
                                               response_format={"type": "json_object"})
    assert json_mode.choices[0].message.content.lstrip().startswith("{")

    # logprobs come from the upstream, with the alternatives it reports.
    scored = client.chat.completions.create(**{**same, "messages": ask(f"Hi ({nonce()})")},
                                            logprobs=True, top_logprobs=2)
    content = scored.choices[0].logprobs.content
    # Up to the two asked for: llama-cpp-python keys a token's alternatives by their text,
    # so two tokens that decode alike (byte pieces) come back as one.
    assert content and all(1 <= len(e.top_logprobs) <= 2 for e in content)
    assert any(len(e.top_logprobs) == 2 for e in content)

    refused(lambda: client.chat.completions.create(**same, n=2), "n")
    records = list(GatewayRequest.objects.filter(endpoint="chat"))
    assert len(records) == 8 and all(r.status == "done" and not r.cached for r in records)
    billed = sum(price_for("free", 10**9, r.tokens).charge_wei for r in records)
    assert [int(r.cost_wei) for r in records] == [
        price_for("free", 10**9, r.tokens).charge_wei for r in records], [
            (r.tokens, r.cost_wei, r.finish_reason) for r in records]
    assert alice.account.balance_wei == CREDIT - billed
    assert ledger_invariant_violations() == []


def test_upstream_chat_passes_every_parameter_on_and_tool_calls_back(
        upstream, servers, alice):
    url = servers.start({"GATEWAY_UPSTREAM_URL": upstream.url})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    tools = [{"type": "function", "function": {
        "name": "weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
    given = {"stop": ["\n"], "seed": 3, "user": "someone", "logprobs": True,
             "top_logprobs": 3, "response_format": {"type": "json_object"},
             "presence_penalty": 0.5, "frequency_penalty": -0.5, "tools": tools,
             "tool_choice": "auto", "parallel_tool_calls": False, "top_p": 0.9,
             "logit_bias": {"50256": -100}}
    messages = [{"role": "user", "content": f"Weather in Oslo? [tool] {nonce()}"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Cold."}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                            **given)
    [sent] = upstream.requests
    assert sent["messages"] == messages
    assert {name: sent[name] for name in given} == given
    assert sent["max_tokens"] == 5 and "max_price_per_token" not in sent
    [call] = answer.choices[0].message.tool_calls
    assert call.function.name == "weather" and answer.choices[0].finish_reason == "tool_calls"

    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5,
                                            stream=True, **given)
    calls = [call for chunk in stream for choice in chunk.choices
             for call in choice.delta.tool_calls or ()]
    assert [c.function.name for c in calls] == ["weather"]
    records = list(GatewayRequest.objects.order_by("created_at"))
    assert [(r.status, r.end_user) for r in records] == [("done", "someone")] * 2
