"""Multi-turn chats on the marketplace run in a session (gateway.chat.chat_session): the
next turn of a conversation maps to the key of the turn before, so it goes first to the
host that answered that one; when that host dies, another takes the conversation, whose
every prompt holds the whole transcript. Through the official `openai` package against a
real server process, host processes and anvil."""

import pickle

import openai
import pytest
import redis
from django.conf import settings as django_settings

from accounts.services import account_get_or_create, account_set_tier
from gateway.chat import chat_session
from gateway.models import GatewayRequest
from gateway.models.requests import RequestStatus
from marketplace.client.runner import _session_key
from marketplace.models import Job, JobAttempt
from tests.conftest import MODEL
from tests.gateway.conftest import network_env, nonce

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
TURNS = 20

OPENING = [{"role": "system", "content": "Be brief."},
           {"role": "user", "content": "Name a bird."}]


def test_a_single_turn_has_no_session():
    assert chat_session(owner_id=1, messages=OPENING) is None
    assert chat_session(owner_id=1, messages=OPENING[1:]) is None


def test_each_turn_of_a_conversation_maps_to_the_key_of_the_turn_before():
    turn2 = [*OPENING, {"role": "assistant", "content": "Owl."},
             {"role": "user", "content": "Another?"}]
    turn3 = [*turn2, {"role": "assistant", "content": "Wren."},
             {"role": "user", "content": [{"type": "text", "text": "And a fish?"}]}]
    key = chat_session(owner_id=1, messages=turn2)
    assert key is not None and key.startswith("chat:1:")
    assert chat_session(owner_id=1, messages=turn3) == key


def test_other_owners_and_other_conversations_get_other_keys():
    turn2 = [*OPENING, {"role": "assistant", "content": "Owl."},
             {"role": "user", "content": "Another?"}]
    key = chat_session(owner_id=1, messages=turn2)
    assert chat_session(owner_id=2, messages=turn2) != key
    other_question = [OPENING[0], {"role": "user", "content": "Name a tree."}, *turn2[2:]]
    assert chat_session(owner_id=1, messages=other_question) != key
    other_system = [{"role": "system", "content": "Be long."}, *turn2[1:]]
    assert chat_session(owner_id=1, messages=other_system) != key


def hosts_of(job_id: str) -> list[str]:
    return list(JobAttempt.objects.filter(job_id=job_id).order_by("number")
                .values_list("host_address", flat=True))


def remembered_host(session: str) -> str | None:
    """The host the server process's runner remembers for a session (in its Redis cache)."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    try:
        names = list(client.scan_iter(f"*{_session_key(session)}"))
        return pickle.loads(client.get(names[0])) if names else None
    finally:
        client.close()


def test_a_20_turn_chat_keeps_its_host_and_moves_with_its_context(network, servers, alice):
    network.start_hosts({"host-1": PRICE, "host-2": PRICE})
    account_set_tier(account_get_or_create(alice.user), tier="premium")  # 21 in a minute
    # The verifier re-scores each whole prompt again and has tests of its own; these are
    # about where a conversation's turns go, many times faster without it.
    url = servers.start({**network_env(network), "MARKETPLACE_VERIFY_PROBATION": "0",
                         "MARKETPLACE_VERIFY_PERCENT": "0",
                         "MARKETPLACE_CHANNELS": "1"})  # the product's default
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    messages = [{"role": "system", "content": f"Answer in a few words. ({nonce()})"}]
    jobs = []

    def turn(number: int) -> str:
        messages.append({"role": "user", "content": f"Say something about room {number}."})
        answer = client.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                                messages=messages)
        assert answer.choices[0].message.content is not None
        assert 0 < answer.usage.completion_tokens <= 8
        messages.append({"role": "assistant", "content": answer.choices[0].message.content})
        jobs.append(answer.model_extra["inkmarket"]["job_id"])
        return answer.model_extra["inkmarket"]["host"]

    for number in range(1, TURNS + 1):
        turn(number)

    records = list(GatewayRequest.objects.filter(endpoint="chat").order_by("created_at"))
    assert [r.status for r in records] == [RequestStatus.DONE] * TURNS
    assert [r.job_id for r in records] == jobs  # every turn, in order
    # Each prompt held the transcript so far: the answer before it, then its question.
    for number, job_id in enumerate(jobs[1:], 2):
        prompt = Job.objects.get(pk=job_id).prompt
        assert f"Assistant: {messages[2 * number - 2]['content']}" in prompt
        assert prompt.endswith(f"User: Say something about room {number}.\n\nAssistant:")
    # Nothing failed: one attempt each; turns 2 to 20 (the first had no session yet) on
    # one host.
    hosts = [hosts_of(job_id) for job_id in jobs]
    assert all(len(h) == 1 for h in hosts), hosts
    assert len({h[0] for h in hosts[1:]}) == 1
    # Every turn was paid through a channel (turns 2 to 20 through one): no job on chain.
    attempts = list(JobAttempt.objects.filter(job_id__in=jobs))
    assert all(a.channel_id and a.chain_job_id is None and a.voucher_wei > 0
               for a in attempts)
    assert len({a.channel_id for a in attempts if str(a.job_id) in jobs[1:]}) == 1
    # ... because the server ran them in the conversation's session.
    session = chat_session(owner_id=alice.user.pk, messages=messages)
    assert remembered_host(session) == hosts[-1][0]

    # The conversation's host dies between two turns: the next goes to the other one,
    # with the whole conversation in its prompt.
    [dead] = [h for h in network.hosts if h.address == hosts[-1][0]]
    dead.kill()
    host = turn(TURNS + 1)
    assert host != dead.address and hosts_of(jobs[-1])[-1] == host
    prompt = Job.objects.get(pk=jobs[-1]).prompt
    for number in range(1, TURNS + 2):
        assert f"User: Say something about room {number}." in prompt
    assert GatewayRequest.objects.get(job_id=jobs[-1]).status == RequestStatus.DONE
    assert remembered_host(session) == host  # the conversation moved with it
