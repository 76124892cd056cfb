"""The bot's one error type: a machine code for the logs and a sentence for the channel."""

from __future__ import annotations


class BotError(Exception):
    """Why a request was not answered. `message` is said in the channel as it is."""

    def __init__(self, code: str, message: str, *, job_id=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.job_id = job_id
