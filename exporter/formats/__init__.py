"""Ingest formats: map a vendor's or a protocol's payload to raw events. No server imports here.

A decoder says what is wrong with a payload by raising :class:`PayloadError` (the front door answers
400) or :class:`TooManyEvents` (413); everything else about a request is the front door's job.
"""


class PayloadError(ValueError):
    """The body is not a valid payload of its format; the message tells the client what to fix."""


class TooManyEvents(PayloadError):
    """The body holds more events (or more JSON values) than one request may carry; raised while
    counting, before the objects exist."""
