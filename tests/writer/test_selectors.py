import pytest

from writer.models import Generation
from writer.selectors import generation_get, generation_list

pytestmark = pytest.mark.django_db


def make(user, **kwargs):
    fields = {"content_type": "blog", "style": "casual", "length": "short", "prompt": "p",
              "full_prompt": "p", "model": "m", "max_tokens": 10, "temperature": 0.5,
              "cache_key": "k", "status": "done"}
    fields.update(kwargs)
    return Generation.objects.create(user=user, **fields)


def test_search_finds_prompts_results_and_edits_of_your_own_only(alice, bob):
    by_prompt = make(alice, prompt="Rivers of Europe")
    by_text = make(alice, text="the RIVER Danube")
    by_edit = make(alice, text="x", edited_text="a river again")
    make(alice, prompt="mountains")
    make(bob, prompt="rivers of bob")
    found = set(generation_list(user=alice, query=" river "))
    assert found == {by_prompt, by_text, by_edit}


def test_filter_by_type_and_ignore_an_unknown_type(alice):
    email = make(alice, content_type="email")
    blog = make(alice, content_type="blog")
    assert list(generation_list(user=alice, content_type="email")) == [email]
    assert set(generation_list(user=alice, content_type="poem")) == {email, blog}


def test_newest_first(alice):
    first, second = make(alice), make(alice)
    assert list(generation_list(user=alice)) == [second, first]


def test_get_is_none_for_someone_elses_a_missing_or_a_malformed_id(alice, bob):
    mine = make(alice)
    assert generation_get(user=alice, pk=mine.id) == mine
    assert generation_get(user=bob, pk=mine.id) is None
    assert generation_get(user=alice, pk="not-a-uuid") is None
