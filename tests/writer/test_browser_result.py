"""After the stream ends, in a real headless Chromium: edit, save, export, delete."""

import os
import uuid

import pytest

from tests.writer.conftest import CHROMIUM

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_the_result_can_be_edited_saved_exported_and_deleted_without_a_reload(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        page.goto(f"{server}/account/signup/")
        page.fill("#id_username", "frank")
        page.fill("#id_email", "frank@example.com")
        page.fill("#id_password1", "a-long-password-8")
        page.fill("#id_password2", "a-long-password-8")
        page.click("#signup")
        page.wait_for_selector("text=What shall we write?")
        page.select_option("#id_content_type", "summary")
        page.select_option("#id_length", "short")
        # A fresh prompt: a result cached by an earlier run would skip the stream.
        page.fill("#id_prompt", f"Owls hunt at night ({uuid.uuid4().hex[:6]}). Their soft "
                                "feathers let them fly silently.")
        page.wait_for_selector("#estimate strong")
        page.click("#generate")
        page.wait_for_url("**/g/*/")
        assert page.query_selector("#stop")
        page.wait_for_selector("#result .facts", timeout=60000)
        assert page.query_selector("#stop") is None  # the end took the Stop button away

        # The edit form arrived over the WebSocket (no CSRF input): htmx sends the token.
        page.fill("#edit-text", "- <script>alert(1)</script> edited\n- second point")
        page.click("#save")
        page.wait_for_selector("text=Saved.")
        assert "<script>alert(1)</script> edited" in page.inner_text("#result")
        assert not [m for m in dialogs if m == "1"]

        with page.expect_download() as download:
            page.click("text=Export Markdown")
        assert download.value.suggested_filename.endswith(".md")

        page.click("#delete")
        page.wait_for_url("**/history/")
        assert "Write your first piece" in page.inner_text("main")
        assert dialogs == ["Delete this piece? This cannot be undone."]
        browser.close()
