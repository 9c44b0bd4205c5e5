"""The few exception types the agent raises on purpose."""


class ConfigError(Exception):
    """The configuration cannot run; the message says which key and why."""


class JournalClosed(Exception):
    """The journal takes no writes (closing, or its writer died): nothing of the batch was written.

    Its own type, not a RuntimeError: a filter's bug raising RuntimeError must not pass for a
    closed journal (and be answered by closing the sender's connection unacked)."""


class ProtocolError(Exception):
    """A peer sent something the protocol does not allow.

    ``fatal`` says whether the connection can go on: a bad entry inside a
    valid message is skipped (not fatal); garbage framing is fatal.
    """

    def __init__(self, reason: str, *, fatal: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


class HttpError(Exception):
    """An HTTP destination gave no complete answer: the connection failed (refused, reset, TLS),
    or what came back was not HTTP/1.x (agent/outputs/http_client.py). The network's doing,
    never the records': a retry, not a split."""
