"""Bytes on the wire, measured from the real Flower messages.

Flower 1.39 ships a message as a tree of content-addressed objects (message, record
dict, records, arrays), each serialised by ``deflate()``. We count the serialised
content tree (record dict, records, arrays: identical arrays inside one message once,
as Flower deduplicates them). The message envelope (random message/node ids, about a
hundred bytes) is left out so that the figure is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def message_bytes(message: Message) -> int:
    if message.has_error():
        return len(message.error.reason.encode())
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message.content).values())


def total_bytes(messages: Iterable[Message]) -> int:
    """Bytes of all ``messages``; a content object shared by several messages (a
    broadcast: the same config, or FedAvg's global model, to every client) is serialised
    once and counted once per message, as it is sent once per message."""
    sizes: dict[int, int] = {}
    total = 0
    for m in messages:
        key = id(m.content) if not m.has_error() else id(m)
        if key not in sizes:
            sizes[key] = message_bytes(m)
        total += sizes[key]
    return total
