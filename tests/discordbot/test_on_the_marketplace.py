"""The bot's commands through the real marketplace: anvil with our contracts, host
processes serving the bundled model, the client's runner, and the accounts ledger."""

from itertools import pairwise

import discord.ext.test as dpytest
import pytest
from asgiref.sync import sync_to_async

from accounts.models import ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create
from accounts.tiers import price_for
from content.models import Status
from discordbot.bot import EDIT_INTERVAL_S
from discordbot.models import DiscordDailySpend, DiscordJob
from marketplace.models import Job, JobState
from tests.discordbot.conftest import current, reply_to, sent

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9


async def invariant_holds(user) -> list[str]:
    account = await sync_to_async(account_get_or_create)(user)
    return await sync_to_async(ledger_invariant_violations)(account=account)


async def test_ask_streams_into_one_edited_reply_and_reacts_with_its_cost(
        network, bot, server, payer, edits, settings):
    network.start_hosts({"host-1": PRICE})
    settings.DISCORD_ASK_MAX_TOKENS = 96
    account = await sync_to_async(account_get_or_create)(payer)
    before = account.balance_wei

    await dpytest.message("!ask Explain in a few sentences how a river delta forms.")
    (reply,) = sent()  # one message: the answer fits, and every change is an edit of it
    assert reply.content == "Thinking…"

    job = await DiscordJob.objects.select_related("reservation").aget()
    assert job.status == Status.DONE and job.tokens > 0 and job.text.strip()
    shown = edits.of(reply.id)
    assert len(shown) >= 2  # the text so far while it streamed, then the whole answer
    times = [t for t, _ in shown]
    assert all(b - a >= EDIT_INTERVAL_S - 0.01 for a, b in pairwise(times))
    final = current(reply)
    assert final.startswith(job.text.strip())
    charge = price_for(job.reservation.tier, PRICE, job.tokens).charge_wei
    assert int(job.cost_wei) == charge > 0
    assert final.endswith(f"· {job.tokens} tokens · {job.model}")
    assert [str(r.emoji) for r in reply.reactions] == ["🪙"]

    # Billed to the server's account through the ledger, under the job's own reference.
    assert job.reservation.reference == f"discord:{job.id}"
    assert job.reservation.state == ReservationState.SETTLED
    await account.arefresh_from_db()
    assert account.balance_wei == before - charge and account.held_wei == 0
    assert await invariant_holds(payer) == []
    spend = await DiscordDailySpend.objects.aget(server=server)
    assert spend.committed_wei == charge  # the worst case came down to the charge
    marketplace_job = await Job.objects.aget(pk=job.id)  # the same id on both sides
    assert marketplace_job.state == JobState.COMPLETED

    await dpytest.message("!history")
    (history,) = sent()
    assert "ask · done" in history.content and "river delta" in history.content


async def test_summarize_as_a_reply_answers_with_the_key_points_of_that_message(
        network, bot, server, payer, config, edits):
    network.start_hosts({"host-1": PRICE})
    alice, bob = config.members[:2]
    original = await dpytest.message(
        "Owls hunt at night. Their soft feathers let them fly almost silently, and their "
        "large eyes see well in the dark. Most owls swallow small prey whole.", member=bob)
    await reply_to(original, "!summarize", alice)
    (reply,) = sent()
    job = await DiscordJob.objects.aget()
    assert job.command == "summarize" and job.status == Status.DONE
    # The replied-to text first, then the template's request.
    assert job.full_prompt.startswith("Owls hunt at night")
    assert "Summarize the text above in 3 key points" in job.full_prompt
    final = current(reply)
    points = [line for line in final.splitlines() if line.startswith("- ")]
    assert points  # shaped into key points by the writer's post-processing
    assert [str(r.emoji) for r in reply.reactions] == ["🪙"]
    assert await invariant_holds(payer) == []


async def test_code_sends_each_code_block_fenced_with_its_language(network, bot, server,
                                                                  payer):
    network.start_hosts({"host-1": PRICE})
    await dpytest.message("!code A Python function that reverses a string.")
    messages = sent()
    job = await DiscordJob.objects.aget()
    assert job.command == "code" and job.status == Status.DONE, job.error_message
    shown = [current(m) for m in messages]
    assert "fenced code block marked with its language" in job.full_prompt
    for text in shown:
        assert text.count("```") % 2 == 0  # no message leaves a block open
    blocks = [text for text in shown if text.startswith("```")]
    if "```" in job.text:  # the model fenced its code: one message per block
        assert blocks and all(b.split("\n", 1)[0] != "```" for b in blocks)
    assert await invariant_holds(payer) == []


async def test_over_the_cap_short_of_money_and_over_the_limit_are_said_plainly(
        network, bot, server, payer, settings):
    """Each refused request still counts against the hour, and none is charged."""
    network.start_hosts({"host-1": PRICE})
    settings.DISCORD_REQUESTS_PER_HOUR = 2
    server.daily_cap_wei = 1000
    await server.asave()
    await dpytest.message("!ask What is a fjord?")
    (reply,) = sent()
    assert "reached its daily spending cap (0.000000000000001 ETH;" in current(reply)

    server.daily_cap_wei = None
    await server.asave()
    account = await sync_to_async(account_get_or_create)(payer)
    from accounts.services import balance_adjust

    await sync_to_async(balance_adjust)(account, amount_wei=-(account.balance_wei - 5),
                                        memo="test: nearly empty")
    await dpytest.message("!ask What is a fjord?")
    (reply,) = sent()
    assert "This server's account can't cover this request" in current(reply)
    assert "0.000000000000000005 ETH is left" in current(reply)

    await dpytest.message("!ask What is a fjord?")
    (reply,) = sent()
    assert "You have used your 2 requests for this hour" in current(reply)
    assert not await DiscordJob.objects.aexists()
    await account.arefresh_from_db()
    assert account.balance_wei == 5 and account.held_wei == 0
    assert await invariant_holds(payer) == []


async def test_with_no_host_for_the_model_the_bot_says_so(network, bot, server):
    await dpytest.message("!ask Is anybody serving?")
    (reply,) = sent()
    assert current(reply) == ("⚠️ No host on the network serves smollm2-135m-instruct right "
                              "now. Try again in a little while.")
    assert not await DiscordJob.objects.aexists()


async def test_image_for_a_permitted_role_says_no_host_serves_an_image_model(
        network, bot, server, config):
    from discord.ext.test import backend

    guild = config.guilds[0]
    artists = backend.make_role("artists", guild)
    await dpytest.add_role(config.members[2], artists)
    server.image_role_ids = [artists.id]
    await server.asave()
    network.start_hosts({"host-1": PRICE})  # a text host only
    await dpytest.message("!image a lighthouse at dusk", member=config.members[2])
    (reply,) = sent()
    assert current(reply).startswith("⚠️ No host on the network serves an image model "
                                     "(sdxl-turbo) right now, so I can't make images.")
    assert not await DiscordJob.objects.aexists()


async def test_a_mention_is_answered_as_a_conversation_that_remembers_the_channel(
        network, bot, server, payer, settings):
    network.start_hosts({"host-1": PRICE})
    settings.DISCORD_ASK_MAX_TOKENS = 32
    await dpytest.message(f"<@{bot.user.id}> My cat is called Miso.")
    await dpytest.message(f"<@{bot.user.id}> What is my cat called?")
    first, second = [current(m) for m in sent()]
    assert first and second
    jobs = [j async for j in DiscordJob.objects.order_by("created")]
    assert [j.command for j in jobs] == ["chat", "chat"]
    assert "My cat is called Miso." in jobs[1].full_prompt  # the earlier turn went along
    assert jobs[0].text.strip()[:40] in jobs[1].full_prompt
    assert await invariant_holds(payer) == []


async def test_an_absurd_price_host_sets_no_price_and_the_servers_ceiling_is_kept(
        network, bot, server, payer):
    honest, absurd = network.start_hosts({"host-1": PRICE, "host-2": 10**27})

    await dpytest.message("!ask Name a planet.")
    (reply,) = sent()
    job = await DiscordJob.objects.select_related("reservation").aget()
    assert job.status == Status.DONE and job.host == honest.address
    assert int(job.price_cap_wei) == PRICE  # reserved at the honest host's price
    assert int(job.cost_wei) == price_for(job.reservation.tier, PRICE, job.tokens).charge_wei

    server.max_price_per_token_wei = PRICE - 1
    await server.asave()
    await dpytest.message("!ask Name another planet.")
    (reply,) = sent()
    assert "No host serves smollm2-135m-instruct at 0.999999999 gwei per token or less " \
           "(the cheapest asks 1 gwei)" in current(reply)
    assert await DiscordJob.objects.acount() == 1
    assert await invariant_holds(payer) == []
