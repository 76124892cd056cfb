"""The bot's services without Discord: the ledger, the daily cap, history, the hourly
limit, settings and permissions."""

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.errors import InsufficientFunds
from accounts.models import ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create
from accounts.tiers import price_for, settlement_for
from content.models import Status
from discordbot import services
from discordbot.errors import BotError
from discordbot.jobs import shape
from discordbot.models import DiscordJob, DiscordServer
from discordbot.selectors import history_for_user, server_committed_today

PRICE = 10**9
ALICE = 111111111111111111


@pytest.fixture
def payer(django_user_model):
    user = django_user_model.objects.create_user(username="payer", password="a-long-pw-77")
    account_get_or_create(user)
    return user


@pytest.fixture
def server(payer):
    return DiscordServer.objects.create(guild_id=222222222222222222, name="Owls",
                                        billing_user=payer)


def reserve(server, *, max_tokens=100, user_id=ALICE, prompt="What is a fjord?"):
    return services.job_reserve(server=server, user_id=user_id, user_name="alice",
                                channel_id=333333333333333333, command="ask", prompt=prompt,
                                full_prompt=prompt, model="smollm2-135m-instruct",
                                max_tokens=max_tokens, price_cap_wei=PRICE)


def worst(payer, max_tokens=100):
    return price_for(payer.account.tier, PRICE, max_tokens).charge_wei


@pytest.mark.django_db
def test_a_job_reserves_its_worst_case_and_settles_for_the_tokens_it_got(server, payer):
    job = reserve(server)
    assert job.reservation.reference == f"discord:{job.id}"
    assert job.reserved_wei == job.reservation.amount_wei == worst(payer)
    assert server_committed_today(server=server) == worst(payer)

    done = services.job_settle(job_id=job.id, node_price_per_token_wei=PRICE, tokens=40,
                               protocol_fee_bps=250, text="A fjord is…", host="0xabc")
    split = settlement_for(payer.account.tier, PRICE, 40, protocol_fee_bps=250)
    assert done.status == Status.DONE and done.cost_wei == split.charged_wei
    done.reservation.refresh_from_db()
    assert done.reservation.state == ReservationState.SETTLED
    assert done.reservation.protocol_fee_wei == split.protocol_fee_wei
    assert server_committed_today(server=server) == split.charged_wei
    assert ledger_invariant_violations(account=payer.account) == []
    # settling again changes nothing
    again = services.job_settle(job_id=job.id, node_price_per_token_wei=PRICE, tokens=40,
                                protocol_fee_bps=250, text="A fjord is…", host="0xabc")
    assert again.cost_wei == split.charged_wei
    assert server_committed_today(server=server) == split.charged_wei


@pytest.mark.django_db
def test_a_job_whose_row_is_deleted_while_it_runs_is_still_charged_for_its_tokens(
        server, payer):
    """Deleting the row (its server, by an admin) mid-job must not make the answer free."""
    account = payer.account
    account.refresh_from_db()
    before = account.balance_wei
    job = reserve(server)
    server.delete()  # takes the job's row with it
    assert not DiscordJob.objects.filter(pk=job.id).exists()
    done = services.job_settle(job_id=job.id, node_price_per_token_wei=PRICE, tokens=40,
                               protocol_fee_bps=1000, text="An inlet.", host="0xhost")
    charge = settlement_for(account.tier, PRICE, 40, protocol_fee_bps=1000).charged_wei
    assert done.cost_wei == charge
    account.refresh_from_db()
    assert account.balance_wei == before - charge and account.held_wei == 0
    assert ledger_invariant_violations() == []


def test_a_running_job_cannot_be_deleted_in_the_admin(admin_client, server, payer):
    job = reserve(server)
    page = admin_client.post(f"/admin/discordbot/discordjob/{job.id}/delete/", {"post": "yes"})
    assert page.status_code == 403
    assert DiscordJob.objects.filter(pk=job.id).exists()


def test_a_failed_job_or_one_with_no_tokens_gives_everything_back(server, payer):
    before = payer.account.balance_wei
    failed = services.job_fail(job_id=reserve(server).id, code="HOST_DIED", message="gone")
    empty = services.job_settle(job_id=reserve(server).id, node_price_per_token_wei=PRICE,
                                tokens=0, protocol_fee_bps=250, text="", host="")
    assert failed.status == Status.FAILED and failed.error_code == "HOST_DIED"
    assert failed.cost_wei == empty.cost_wei == 0
    payer.account.refresh_from_db()
    assert payer.account.balance_wei == before and payer.account.held_wei == 0
    assert server_committed_today(server=server) == 0
    assert ledger_invariant_violations(account=payer.account) == []


@pytest.mark.django_db
def test_the_daily_cap_counts_running_jobs_at_their_worst_case(server, payer):
    server.daily_cap_wei = 2 * worst(payer)
    server.save()
    reserve(server)
    reserve(server)
    with pytest.raises(BotError) as info:
        reserve(server)
    assert info.value.code == "OVER_CAP"
    assert DiscordJob.objects.count() == 2
    assert server_committed_today(server=server) == 2 * worst(payer)


@pytest.mark.django_db(transaction=True)
def test_two_jobs_at_once_cannot_both_pass_a_cap_only_one_fits_under(server, payer):
    server.daily_cap_wei = worst(payer)
    server.save()
    barrier = threading.Barrier(2)
    outcomes = []

    def attempt():
        try:
            barrier.wait()
            reserve(server)
            outcomes.append("reserved")
        except BotError as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["OVER_CAP", "reserved"]
    assert server_committed_today(server=server) == worst(payer)


@pytest.mark.django_db
def test_a_balance_short_of_the_worst_case_creates_no_job_and_commits_nothing(server, payer):
    from accounts.services import balance_adjust

    balance_adjust(payer.account, amount_wei=-(payer.account.balance_wei - 10), memo="test")
    with pytest.raises(InsufficientFunds):
        reserve(server)
    assert not DiscordJob.objects.exists()
    assert server_committed_today(server=server) == 0


@pytest.mark.django_db
def test_a_server_without_a_billing_account_cannot_reserve(payer):
    server = DiscordServer.objects.create(guild_id=5, name="No payer")
    with pytest.raises(BotError) as info:
        reserve(server)
    assert info.value.code == "NO_BILLING_ACCOUNT"


@pytest.mark.django_db
def test_history_keeps_a_users_newest_jobs_and_forgets_the_rest(server, payer, settings):
    settings.DISCORD_HISTORY_KEEP = 3
    for i in range(5):
        job = reserve(server, prompt=f"question {i}")
        services.job_settle(job_id=job.id, node_price_per_token_wei=PRICE, tokens=1,
                            protocol_fee_bps=0, text="ok", host="0x1")
    reserve(server, user_id=999, prompt="someone else")
    kept = history_for_user(user_id=ALICE, limit=10)
    assert [j.prompt for j in kept] == ["question 4", "question 3", "question 2"]
    assert [j.prompt for j in history_for_user(user_id=999)] == ["someone else"]
    assert ledger_invariant_violations(account=payer.account) == []  # the ledger keeps all


@pytest.mark.django_db
def test_the_hourly_limit_counts_each_user_apart(settings):
    settings.DISCORD_REQUESTS_PER_HOUR = 2
    services.quota_clear(user_id=ALICE)
    services.quota_clear(user_id=ALICE + 1)
    assert [services.quota_hit(user_id=ALICE).allowed for _ in range(3)] == [True, True, False]
    refused = services.quota_hit(user_id=ALICE)
    assert refused.remaining == 0 and 0 < refused.reset_s <= 3600
    assert services.quota_hit(user_id=ALICE + 1).allowed


def test_ids_are_read_from_mentions_and_numbers():
    assert services.parse_ids("<#123456789012345678>, 223456789012345678 <@&323456789012345678>"
                              " <@!423456789012345678>") == [
        123456789012345678, 223456789012345678, 323456789012345678, 423456789012345678]
    assert services.parse_ids("all") == [] and services.parse_ids("") == []
    with pytest.raises(BotError):
        services.parse_ids("#general")


def test_images_are_for_listed_users_and_roles_only():
    server = DiscordServer(guild_id=1, image_role_ids=[10], image_user_ids=[20])
    assert services.image_permitted(server, user_id=20, role_ids=[])
    assert services.image_permitted(server, user_id=30, role_ids=[1, 10])
    assert not services.image_permitted(server, user_id=30, role_ids=[1])
    assert not services.image_permitted(DiscordServer(guild_id=1), user_id=20, role_ids=[10])


def test_channels_are_all_allowed_until_some_are_listed():
    assert services.channel_allowed(DiscordServer(guild_id=1), channel_id=5)
    listed = DiscordServer(guild_id=1, allowed_channel_ids=[5])
    assert services.channel_allowed(listed, channel_id=5)
    assert not services.channel_allowed(listed, channel_id=6)
    assert services.channel_allowed(listed, channel_id=7, parent_id=5)  # a thread in it
    assert not services.channel_allowed(listed, channel_id=7, parent_id=6)


@pytest.mark.django_db
def test_a_settings_change_with_one_bad_value_changes_nothing(server):
    with pytest.raises(BotError):
        services.server_settings_change(server=server, changes={
            "ask_model": "tinyllama", "daily_cap_wei": "12.5"})
    server.refresh_from_db()
    assert server.ask_model == "smollm2-135m-instruct"
    said = services.server_settings_change(server=server, changes={
        "ask_model": "tinyllama", "daily_cap_wei": "none", "code_model": None})
    assert said == ["ask model: tinyllama", "daily cap: none"]
    server.refresh_from_db()
    assert server.ask_model == "tinyllama" and server.daily_cap_wei is None


@pytest.mark.django_db
def test_the_max_price_per_token_is_an_amount_or_none(server):
    said = services.server_settings_change(server=server,
                                           changes={"max_price_per_token": "2000000000"})
    assert said == ["max price per token: 2 gwei"]
    server.refresh_from_db()
    assert server.max_price_per_token_wei == 2 * 10**9
    said = services.server_settings_change(server=server,
                                           changes={"max_price_per_token": "2.5 gwei"})
    assert said == ["max price per token: 2.5 gwei"]
    server.refresh_from_db()
    assert server.max_price_per_token_wei == 25 * 10**8
    for bad in ("0", "1.5", "cheap", "-3", "0.0000000001 gwei", "1 BTC"):
        with pytest.raises(BotError, match="the max price per token is an amount"):
            services.server_settings_change(server=server,
                                            changes={"max_price_per_token": bad})
    assert services.server_settings_change(server=server, changes={
        "max_price_per_token": "none"}) == ["max price per token: none"]
    server.refresh_from_db()
    assert server.max_price_per_token_wei is None


def test_code_answers_are_shaped_into_one_fenced_block_each_with_its_language():
    text = ("Here you go:\n```\ndef reverse(s):\n    return s[::-1]\n```\nAnd in JS:\n"
            "```\nconst reverse = (s) => s.split('').reverse().join('');\n```\n"
            "Both slice the string backwards.")
    parts = shape("code", text)
    assert parts[0] == "```python\ndef reverse(s):\n    return s[::-1]\n```"
    assert parts[1].startswith("```javascript\nconst reverse")
    assert "Both slice the string backwards." in parts[2]


def test_summaries_are_shaped_into_key_points_once_each():
    assert shape("summarize", "Key points:\n- Owls hunt at night\n* **They fly quietly**\n"
                              "- Owls hunt at night") == [
        "- Owls hunt at night\n- They fly quietly"]


def test_runbot_says_clearly_when_the_token_file_is_unset(settings):
    settings.DISCORD_TOKEN_FILE = None
    with pytest.raises(CommandError, match="DISCORD_TOKEN_FILE is not set"):
        call_command("runbot")


def test_runbot_says_clearly_when_the_token_file_cannot_be_read(settings, tmp_path):
    settings.DISCORD_TOKEN_FILE = str(tmp_path / "missing")
    with pytest.raises(CommandError, match="cannot be read: No such file or directory"):
        call_command("runbot")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    settings.DISCORD_TOKEN_FILE = str(empty)
    with pytest.raises(CommandError, match="is empty"):
        call_command("runbot")


def answer_of(parts, cost_wei=612, tokens=3):
    import uuid

    from discordbot.jobs import Answer

    return Answer(job_id=uuid.uuid4(), parts=parts, text="".join(parts), tokens=tokens,
                  cost_wei=cost_wei, model="smollm2-135m-instruct", host="0x1")


def test_the_cost_goes_under_the_last_message_or_after_it_when_that_one_is_full():
    from discordbot.bot import final_chunks

    assert final_chunks(answer_of(["Hi."])) == [
        "Hi.\n-# 0.000000000000000612 ETH · 3 tokens · smollm2-135m-instruct"]
    full = final_chunks(answer_of(["x" * 1990]))
    assert full[0] == "x" * 1990 and full[1].startswith("-# 0.000000000000000612 ETH")
    assert final_chunks(answer_of([""], cost_wei=0, tokens=0)) == [
        "(The model returned no text.)\n-# free · 0 tokens · smollm2-135m-instruct"]
    # each part (a code block, the explanation) is a message of its own
    assert final_chunks(answer_of(["```python\nprint(1)\n```", "Prints one."])) == [
        "```python\nprint(1)\n```",
        "Prints one.\n-# 0.000000000000000612 ETH · 3 tokens · smollm2-135m-instruct"]


def test_runbot_stops_with_a_sentence_when_discord_refuses_or_cannot_be_reached(settings,
                                                                               tmp_path):
    token = tmp_path / "token"
    token.write_text("not.a.real-token\n")
    settings.DISCORD_TOKEN_FILE = str(token)
    with pytest.raises(CommandError, match="^Discord (refused the token|cannot be reached)"):
        call_command("runbot")
