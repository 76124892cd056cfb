"""Schemathesis hooks for tests/gateway/test_schema.py (its schemathesis process loads
them, `hooks` in the config it is given).

A chat request has rules no JSON Schema can state: the last message is the user's, and
the messages make a prompt that is not blank (the schema says so in words). A request
schemathesis generates as valid gets a last user message with text, so it is valid by
those rules too and the server must accept it; invalid ones are left as they are."""

import schemathesis


@schemathesis.hook("map_case").apply_to(method="POST", path="/v1/chat/completions")
def end_with_a_user_message(context, case):
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return case
    if isinstance(case.body, dict) and isinstance(case.body.get("messages"), list):
        case.body["messages"] = [*case.body["messages"],
                                 {"role": "user", "content": "Say hello."}]
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/v1/batch")
def webhook_into_the_allowed_network(context, case):
    """Where a webhook URL leads is the outbound policy's to judge, after resolving it (a
    name that does not resolve, or an address of our own network, is a 400 URL_* that
    no schema can foresee; tests/outbound holds the server to that). A valid request
    gets a webhook URL on the test's allow-list, so it is valid by that rule too."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return case
    if isinstance(case.body, dict) and case.body.get("webhook_url"):
        case.body["webhook_url"] = "http://localhost:8080/hook"
    return case
