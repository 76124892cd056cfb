import pytest

from writer.models import Generation

pytestmark = pytest.mark.django_db


def make(user, **kwargs):
    fields = {"content_type": "blog", "style": "casual", "length": "short", "prompt": "p",
              "full_prompt": "p", "model": "m", "max_tokens": 10, "temperature": 0.5,
              "cache_key": "k", "status": "done", "text": "Title\n\nBody text."}
    fields.update(kwargs)
    return Generation.objects.create(user=user, **fields)


def test_anonymous_visitors_see_the_landing_page(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"Start writing" in response.content


def test_signing_up_logs_you_in_and_shows_the_generate_page(client):
    response = client.post("/account/signup/", {"username": "dana", "email": "d@example.com",
                                                 "password1": "a-long-password-9",
                                                 "password2": "a-long-password-9"})
    assert response.status_code == 302
    page = client.get("/")
    assert b"What shall we write?" in page.content
    assert b'hx-get="/estimate"' in page.content


@pytest.mark.parametrize("data, message", [
    ({"prompt": ""}, b"Write a prompt first."),
    ({"prompt": "x" * 4001}, b"Keep the prompt under 4000 characters"),
    ({"content_type": "poem"}, b"Select a valid choice"),
    ({"style": "angry"}, b"Select a valid choice"),
    ({"length": "epic"}, b"Select a valid choice"),
    ({"temperature": "3"}, b"less than or equal to 2"),
    ({"max_price_per_token": "0"}, b"A price per token such as"),
    ({"max_price_per_token": "1.5e9"}, b"A price per token such as"),
    ({"max_price_per_token": "1.5 wei"}, b"A price per token such as"),
    ({"max_price_per_token": "2 dollars"}, b"A price per token such as"),
])
def test_bad_input_is_a_form_error_and_nothing_is_created(alice_client, data, message):
    form = {"content_type": "blog", "style": "casual", "length": "short", "prompt": "hi"}
    form.update(data)
    response = alice_client.post("/generate", form)
    assert response.status_code == 400
    assert message in response.content
    assert Generation.objects.count() == 0


def test_html_in_prompts_and_results_is_shown_literally(alice_client, alice):
    generation = make(alice, prompt="<script>alert(1)</script>",
                      text="<img src=x onerror=alert(2)>",
                      processed={"title": "<b>t</b>", "sections": [], "word_count": 1,
                                 "reading_minutes": 1})
    page = alice_client.get(f"/g/{generation.id}/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert "&lt;b&gt;t&lt;/b&gt;" in page


def test_someone_elses_generation_is_not_found(alice_client, bob):
    generation = make(bob)
    assert alice_client.get(f"/g/{generation.id}/").status_code == 404
    assert alice_client.post(f"/g/{generation.id}/delete").status_code == 404
    assert Generation.objects.filter(pk=generation.id).exists()


def test_history_searches_filters_and_deletes(alice_client, alice, bob):
    make(alice, prompt="rivers of europe", content_type="blog")
    make(alice, prompt="ask for a raise", content_type="email")
    make(bob, prompt="rivers of bob")
    page = alice_client.get("/history/?q=rivers").content.decode()
    assert "rivers of europe" in page and "ask for a raise" not in page
    assert "rivers of bob" not in page
    page = alice_client.get("/history/?type=email").content.decode()
    assert "ask for a raise" in page and "rivers of europe" not in page
    gone = Generation.objects.get(prompt="ask for a raise")
    alice_client.post(f"/g/{gone.id}/delete")
    assert not Generation.objects.filter(pk=gone.id).exists()


def test_an_empty_history_says_how_to_start(alice_client):
    assert b"Write your first piece" in alice_client.get("/history/").content


def test_edits_are_saved_and_exported_as_markdown(alice_client, alice):
    generation = make(alice)
    alice_client.post(f"/g/{generation.id}/save", {"text": "# New title\n\nNew body."})
    generation.refresh_from_db()
    assert generation.edited_text.startswith("# New title")
    assert generation.processed["title"] == "New title"
    response = alice_client.get(f"/g/{generation.id}/export.md")
    assert response["Content-Type"].startswith("text/markdown")
    assert response.content.decode() == "# New title\n\nNew body.\n"


def test_reuse_fills_the_form_with_the_old_prompt(alice_client, alice):
    generation = make(alice, prompt="a prompt worth reusing", content_type="email")
    page = alice_client.get(f"/?reuse={generation.id}").content.decode()
    assert "a prompt worth reusing" in page
    assert '<option value="email" selected>' in page


def test_the_estimate_says_plainly_when_no_host_serves_the_model(alice_client, settings):
    settings.CHAIN_RPC = "http://127.0.0.1:9"  # nothing listens there
    page = alice_client.get("/estimate?content_type=blog&length=short").content.decode()
    assert "No host serves smollm2-135m-instruct right now" in page


def test_a_malformed_reuse_link_shows_an_empty_form(alice_client):
    response = alice_client.get("/?reuse=not-a-uuid")
    assert response.status_code == 200
    assert b"What shall we write?" in response.content


def test_a_finished_generation_offers_edit_copy_export_reuse_and_delete(alice_client, alice):
    page = alice_client.get(f"/g/{make(alice).id}/").content.decode()
    for marker in ('id="edit-text"', 'id="copy"', "Export Markdown", "Reuse prompt",
                   'id="delete"'):
        assert marker in page
    assert "ws-connect" not in page


def test_a_live_generation_connects_its_stream_and_offers_stop(alice_client, alice):
    page = alice_client.get(f"/g/{make(alice, status='streaming', text='so far').id}/")
    html = page.content.decode()
    assert 'ws-connect="/ws/generation/' in html and 'id="stop"' in html
    assert "so far" in html and 'id="edit-text"' not in html


@pytest.mark.django_db(transaction=True)
async def test_the_anonymous_estimate_never_discovers_a_made_up_model(async_client):
    """The attack: ask for estimates of invented model ids, each a chain read, a probe of
    every host, a cache entry and a metric label, from a page anyone may load."""
    from marketplace.client import discovery

    discovery.invalidate()
    invented = "made-up-model-0001"
    response = await async_client.get("/estimate", {"content_type": "blog", "length": "short",
                                                    "model": invented})
    assert response.status_code == 200
    assert invented not in discovery._cache
    assert invented not in response.content.decode()
