"""OpenAI chat messages as the one prompt a host takes.

A host wraps the prompt it gets as the single user turn of the model's own chat template
(marketplace.host.backends), so a lone user message goes as it is; a conversation goes as
a transcript, the system text first, ending with the last user turn for the model to
answer.
"""

from __future__ import annotations

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


def messages_to_prompt(messages: list[dict]) -> str:
    if not messages:
        raise GatewayError("INVALID_REQUEST", "messages must not be empty")
    turns = []
    for number, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise GatewayError("INVALID_REQUEST", f"messages[{number}].role {role!r} is not "
                               f"one of {', '.join(ROLES)}")
        turns.append((role, message_text(message.get("content"))))
    if turns[-1][0] != "user":
        raise GatewayError("INVALID_REQUEST", "the last message must be the user's")
    if len(turns) == 1:
        return turns[0][1]
    system = "\n\n".join(text for role, text in turns if ROLES[role] == "System")
    dialogue = "\n\n".join(f"{ROLES[role]}: {text}" for role, text in turns
                           if ROLES[role] != "System")
    return (f"{system}\n\n{dialogue}" if system else dialogue) + "\n\nAssistant:"
