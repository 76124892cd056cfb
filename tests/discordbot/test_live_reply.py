"""The streaming reply on its own, against dpytest's channel: text that outgrows one
message goes on in the next, code blocks stay whole, and no message is edited faster than
the interval allows."""

import asyncio
from itertools import pairwise

import pytest

from discordbot.bot import LiveReply
from discordbot.split import split_message
from tests.discordbot.conftest import current, sent

pytestmark = pytest.mark.django_db(transaction=True)
INTERVAL = 0.2


async def test_a_growing_answer_goes_on_in_more_messages_without_splitting_its_code(
        bot, config, edits):
    channel = config.channels[0]
    first = await channel.send("Thinking…")
    reply = LiveReply(first, channel.send, interval=INTERVAL)
    prose = "".join(f"Sentence number {i} of the introduction. " for i in range(40))
    code = "```python\n" + "\n".join(f"print({i})" for i in range(80)) + "\n```"
    text = prose + "\n\n" + code + "\n\nThat is the whole program."
    for end in range(0, len(text) + 40, 40):  # the text arrives 40 characters at a time
        await reply.update(text[:end])
        await asyncio.sleep(0.005)
    await asyncio.sleep(2 * INTERVAL)  # the stream pauses: the text so far is shown
    assert len(reply.messages) == 2  # past 2,000 characters it went on in a second one
    await reply.finish(split_message("Final: " + text))

    messages = sent()
    assert messages[0].id == first.id and len(messages) >= 2
    shown = [current(m) for m in messages]
    assert shown[0].startswith("Final: Sentence number 0")
    assert any(code in s for s in shown)  # the block, whole, in one message
    assert shown[-1].endswith("That is the whole program.")
    assert all(len(s) <= 2000 and s.count("```") % 2 == 0 for s in shown)
    for message in messages:
        times = [t for t, _ in edits.of(message.id)]
        assert all(b - a >= INTERVAL - 0.01 for a, b in pairwise(times))
    assert len(edits.of(first.id)) < len(text) // 40  # throttled: far fewer edits than tokens


async def test_a_failure_keeps_the_text_so_far_and_says_why(bot, config):
    channel = config.channels[0]
    first = await channel.send("Thinking…")
    reply = LiveReply(first, channel.send, interval=INTERVAL)
    await reply.update("Rivers carry")
    await reply.fail("The job failed (HOST_DIED: gone); nothing was charged.")
    (message,) = sent()
    assert current(message) == ("Rivers carry\n\n⚠️ The job failed (HOST_DIED: gone); nothing "
                                "was charged.")
