"""OpenAI chat messages as the one prompt a host takes, and what the rest of OpenAI's
chat parameters ask of a run.

A host wraps the prompt it gets as the single user turn of the model's own chat template
(marketplace.host.backends), so a lone user message goes as it is; a conversation goes as
a transcript, the system text first, ending with the last user turn for the model to
answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from gateway.errors import GatewayError

ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant",
         "tool": "Tool"}


def message_text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise GatewayError("INVALID_REQUEST", "only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise GatewayError("INVALID_REQUEST", "a message's content must be a string or parts")


def messages_to_prompt(messages: list[dict], *, answer_last: bool = True) -> str:
    """The transcript a host takes as its prompt; with `answer_last`, the last message must
    be the user's (a host answers the user)."""
    if not messages:
        raise GatewayError("INVALID_REQUEST", "messages must not be empty")
    turns = []
    for number, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise GatewayError("INVALID_REQUEST", f"messages[{number}].role {role!r} is not "
                               f"one of {', '.join(ROLES)}")
        turns.append((role, message_text(message.get("content"))))
    if answer_last and turns[-1][0] != "user":
        raise GatewayError("INVALID_REQUEST", "the last message must be the user's")
    if len(turns) == 1:
        return turns[0][1]
    system = "\n\n".join(text for role, text in turns if ROLES[role] == "System")
    dialogue = "\n\n".join(f"{ROLES[role]}: {text}" for role, text in turns
                           if ROLES[role] != "System")
    return (f"{system}\n\n{dialogue}" if system else dialogue) + "\n\nAssistant:"


def chat_session(*, owner_id: int, messages: list[dict]) -> str | None:
    """The marketplace session of a multi-turn chat (docs/gateway.md, "Sessions"): None for
    a single turn (no assistant message yet); else a key from the caller and the
    conversation's opening, its messages up to and including the first user message.

    A client sends the whole conversation each turn, appending the answer and its next
    question, so the opening is the same in every turn of one conversation, and turn n+1
    maps to turn n's key. Two conversations of one owner that open alike share a key: they
    share the prompt's prefix too, which is what the host's cache keeps. Another owner
    never shares one."""
    if not any(message.get("role") == "assistant" for message in messages):
        return None
    opening = []
    for message in messages:
        opening.append([message.get("role"), message_text(message.get("content"))])
        if message.get("role") == "user":
            break
    digest = hashlib.sha256(json.dumps(opening, ensure_ascii=False).encode()).hexdigest()
    return f"chat:{owner_id}:{digest}"


# ---- OpenAI's parameters ----------------------------------------------------------------
# Each is honoured or refused, never ignored (docs/gateway.md, "Chat parameters"). On the
# marketplace a host samples with randomness committed per job and a verifier re-checks
# every token (marketplace.sampling): what would change the sampling rule (penalties, a
# grammar for JSON, tools) is refused there; an upstream gets them all, with the messages.

MAX_STOP = 4
MAX_STOP_CHARS = 200
MAX_USER_CHARS = 256
# The listed OpenAI fields an upstream gets as they came (messages, the model and the
# token limit are set by the gateway itself).
PASSED_ON = ("stop", "seed", "n", "user", "logprobs", "top_logprobs", "response_format",
             "presence_penalty", "frequency_penalty", "tools", "tool_choice",
             "parallel_tool_calls", "top_p", "logit_bias")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")


@dataclass(frozen=True)
class ChatOptions:
    """What a chat request asks beyond the prompt and the basic parameters."""

    stop: tuple[str, ...] = ()
    logprobs: bool = False
    include_usage: bool = True
    user: str = ""
    # The fields an upstream gets besides the messages (upstream mode only).
    passed: dict = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """Nothing that changes the answer or its record: it may be served from, and kept
        in, the cache."""
        return not (self.stop or self.logprobs or self.user or self.passed)


PLAIN = ChatOptions()


def _unsupported(param: str, why: str) -> GatewayError:
    return GatewayError("UNSUPPORTED_PARAMETER", f"{param} is not supported {why}",
                        param=param)


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError("INVALID_PARAMETER", f"{param}: {message}", param=param)


ON_MARKETPLACE = ("on the marketplace: hosts sample by one rule that a verifier re-checks "
                  "token by token")


def chat_options(fields: dict, *, stream: bool, upstream: bool) -> ChatOptions:
    """The options of a chat request's OpenAI fields (`fields`: only those given, not
    null); GatewayError INVALID_PARAMETER or UNSUPPORTED_PARAMETER with `param`."""
    if not fields:
        return PLAIN
    stop = fields.get("stop")
    stops: tuple[str, ...] = ()
    if stop is not None:
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        if len(stops) > MAX_STOP:
            raise _invalid("stop", f"at most {MAX_STOP} sequences")
        if any(not 1 <= len(s) <= MAX_STOP_CHARS for s in stops):
            raise _invalid("stop", f"each sequence has 1 to {MAX_STOP_CHARS} characters")
    n = fields.get("n")
    if n is not None and n != 1:
        if n < 1:
            raise _invalid("n", "must be at least 1")
        raise _unsupported("n", "above 1: one completion a request (send n requests)")
    user = fields.get("user")
    if user is not None and len(user) > MAX_USER_CHARS:
        raise _invalid("user", f"at most {MAX_USER_CHARS} characters")
    top = fields.get("top_logprobs")
    logprobs = bool(fields.get("logprobs"))
    if top is not None:
        if not 0 <= top <= 20:
            raise _invalid("top_logprobs", "must be 0 to 20")
        if not logprobs:
            raise _invalid("top_logprobs", "needs logprobs: true")
    options = fields.get("stream_options")
    include_usage = True
    if options is not None:
        if not stream:
            raise _invalid("stream_options", "only with stream: true")
        unknown = set(options) - {"include_usage"}
        if unknown:
            raise _unsupported("stream_options", f"with {', '.join(sorted(unknown))}")
        include_usage = options.get("include_usage", True)
        if not isinstance(include_usage, bool):
            raise _invalid("stream_options", "include_usage is true or false")
    for name in ("presence_penalty", "frequency_penalty"):
        value = fields.get(name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise _invalid(name, "must be between -2 and 2")
    top_p = fields.get("top_p")
    if top_p is not None and not 0.0 <= top_p <= 1.0:
        raise _invalid("top_p", "must be between 0 and 1")
    response_format = fields.get("response_format")
    if response_format is not None and response_format.get("type") not in RESPONSE_FORMATS:
        raise _invalid("response_format", f"type is one of {', '.join(RESPONSE_FORMATS)}")
    if upstream:
        # stream_options is the gateway's own to honour: it always asks for the usage.
        passed = {name: fields[name] for name in PASSED_ON if name in fields}
        for name in ("functions", "function_call"):
            if fields.get(name) is not None:
                raise _unsupported(name, "(deprecated by OpenAI): use tools")
        return ChatOptions(stop=(), logprobs=logprobs, include_usage=include_usage,
                           user=user or "", passed=passed)
    if fields.get("seed") is not None:
        raise _unsupported("seed", "on the marketplace: each job's randomness is committed "
                           "for that job, so a seed cannot repeat an answer (temperature 0 "
                           "does)")
    if top:
        raise _unsupported("top_logprobs", "above 0 on the marketplace: hosts report the "
                           "chosen token's log-probability only")
    for name in ("presence_penalty", "frequency_penalty"):
        if fields.get(name):
            raise _unsupported(name, ON_MARKETPLACE)
    if response_format is not None and response_format["type"] != "text":
        raise _unsupported("response_format", f"other than text {ON_MARKETPLACE}")
    if top_p is not None:
        raise _unsupported("top_p", f"{ON_MARKETPLACE} (top-k 40, min-p 0.05 and top-p 0.95, "
                           "always)")
    if fields.get("logit_bias"):  # no bias is no bias
        raise _unsupported("logit_bias", ON_MARKETPLACE)
    for name in TOOL_FIELDS:
        value = fields.get(name)
        if value is not None and value != []:  # no tools is no tools
            raise _unsupported(name, ON_MARKETPLACE)
    return ChatOptions(stop=stops, logprobs=logprobs, include_usage=include_usage,
                       user=user or "")


# ---- Stop sequences on the marketplace --------------------------------------------------


class StopCutter:
    """Cuts streamed text before the first stop sequence. Text that may be the start of
    one is held back until the next piece shows whether it is."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that may be shown now; after a stop sequence, nothing."""
        if self.stopped:
            return ""
        buffer = self.pending + piece
        found = [at for at in (buffer.find(s) for s in self.stops) if at >= 0]
        if found:
            self.stopped = True
            self.pending = ""
            return buffer[:min(found)]
        # The longest end of the buffer that begins a stop sequence.
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        self.pending = buffer[len(buffer) - hold:] if hold else ""
        return buffer[:len(buffer) - hold]

    def flush(self) -> str:
        """What was held back, at the end of a text no stop sequence ended."""
        rest, self.pending = self.pending, ""
        return "" if self.stopped else rest


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the first stop sequence, and whether there was one."""
    found = [at for at in (text.find(s) for s in stops) if at >= 0]
    return (text[:min(found)], True) if found else (text, False)


def logprob_entry(piece: str, logprob: float | None) -> dict:
    """One token of OpenAI's `logprobs.content`."""
    return {"token": piece, "logprob": logprob if logprob is not None else -9999.0,
            "bytes": list(piece.encode()), "top_logprobs": []}
