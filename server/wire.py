"""Bytes on the wire, measured from the real Flower messages.

Flower 1.39 ships a message as a tree of content-addressed objects (message, record
dict, records, arrays), each serialised by ``deflate()``. The sum of those serialised
sizes is what crosses the network for one message (identical arrays inside one message
are sent once, exactly as Flower deduplicates them).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def message_bytes(message: Message) -> int:
    if message.has_error():
        return len(message.error.reason.encode())
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def total_bytes(messages: Iterable[Message]) -> int:
    return sum(message_bytes(m) for m in messages)
