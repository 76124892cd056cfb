"""A bot command whose job fails on the chain: the channel hears the code, a fixed message
and the job id to quote, never the failure's text (the RPC URL with its key, exception
classes, stack details)."""

import discord.ext.test as dpytest
import pytest

from discordbot.models import DiscordJob
from marketplace.client.errors import public_message
from tests.conftest import LEAKS
from tests.discordbot.conftest import current, sent
from writer.models import Status

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_job_failing_on_a_secret_rpc_url_is_answered_with_code_and_job_id(
        secret_rpc, bot, server, payer):
    await dpytest.message("!ask What is a fjord?")
    (reply,) = sent()
    said = current(reply)
    job = await DiscordJob.objects.aget()
    assert (job.status, job.error_code) == (Status.FAILED, "RPC_UNAVAILABLE")
    assert f"The job failed (RPC_UNAVAILABLE): {public_message('RPC_UNAVAILABLE')}." in said
    assert f"Job id: {job.id}." in said
    for leak in LEAKS:
        assert leak not in said, leak
