"""Schemathesis hooks for tests/gateway/test_schema.py (its schemathesis process loads
them, `hooks` in the config it is given).

A chat request has rules no JSON Schema can state: the last message is the user's, the
messages make a prompt that is not blank, top_logprobs needs logprobs and stream_options a
stream (the schema says so in words). A request
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
    if isinstance(case.body, dict):
        # OpenAI's pairings, stated in the fields' descriptions: top_logprobs comes with
        # logprobs, stream_options with a stream.
        if case.body.get("top_logprobs") is not None:
            case.body["logprobs"] = True
        if case.body.get("stream_options") is not None:
            case.body["stream"] = True
    return _price_ceiling_above_the_hosts(case)


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



def _price_ceiling_above_the_hosts(case):
    """Whether a host asks at most a request's max_price_per_token depends on the hosts'
    prices now (a 503 NO_HOSTS_WITHIN_PRICE that no schema can foresee; tests/gateway/
    test_prices.py holds the server to that). A valid request gets the largest ceiling
    the schema allows, in the type it was made in, so it is valid by that rule too."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return case
    if isinstance(case.body, dict) and case.body.get("max_price_per_token") is not None:
        largest = 10**28 - 1
        given = case.body["max_price_per_token"]
        case.body["max_price_per_token"] = str(largest) if isinstance(given, str) else largest
    return case


@schemathesis.hook("map_case").apply_to(method="POST", path="/v1/inference")
def inference_price_ceiling_above_the_hosts(context, case):
    return _price_ceiling_above_the_hosts(case)
