"""Per-server settings in Django admin."""

import pytest

from discordbot.models import DiscordServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    admin = django_user_model.objects.create_superuser(username="root", password="pw-12345678")
    client.force_login(admin)
    return admin


def test_an_admin_adds_a_server_with_its_channels_roles_and_payer(client, staff):
    assert client.get("/admin/discordbot/discordserver/add/").status_code == 200
    response = client.post("/admin/discordbot/discordserver/add/", {
        "guild_id": "123456789012345678", "name": "Owls", "billing_user": staff.pk,
        "daily_cap_wei": "5000", "allowed_channel_ids": "<#223456789012345678>, 323456789012345678",
        "ask_model": "smollm2-135m-instruct", "code_model": "smollm2-135m-instruct",
        "summarize_model": "smollm2-135m-instruct", "chat_model": "smollm2-135m-instruct",
        "image_model": "sdxl-turbo", "image_role_ids": "", "image_user_ids": "423456789012345678",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    server = DiscordServer.objects.get(guild_id=123456789012345678)
    assert server.allowed_channel_ids == [223456789012345678, 323456789012345678]
    assert server.image_role_ids == [] and server.image_user_ids == [423456789012345678]
    assert server.billing_user == staff and server.daily_cap_wei == 5000
    assert "Owls" in client.get("/admin/discordbot/discordserver/").content.decode()
    page = client.get(f"/admin/discordbot/discordserver/{server.pk}/change/").content.decode()
    assert "223456789012345678, 323456789012345678" in page


def test_a_channel_list_that_is_not_ids_is_refused_in_the_form(client, staff):
    response = client.post("/admin/discordbot/discordserver/add/", {
        "guild_id": "1", "allowed_channel_ids": "#general", "ask_model": "m",
        "code_model": "m", "summarize_model": "m", "chat_model": "m", "image_model": "m",
    })
    assert response.status_code == 200
    assert "is not a mention or an id" in response.content.decode()
    assert not DiscordServer.objects.exists()


def test_the_jobs_and_spending_pages_open(client, staff):
    assert client.get("/admin/discordbot/discordjob/").status_code == 200
    assert client.get("/admin/discordbot/discorddailyspend/").status_code == 200
