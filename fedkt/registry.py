"""A tiny name -> factory registry shared by models, fusions, losses, knowledge and strategies.

One mechanism (instead of if-chains per component) keeps names, error messages and
parameter checking identical everywhere, in the spirit of scikit-learn's consistency.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from fedkt.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@FUSIONS.register("knfu")``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return deco

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``; a one-line ConfigError otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r} (choose one of: {', '.join(self.names())})"
            ) from None

    def parameters(self, name: str) -> list[str]:
        """Keyword parameters the factory accepts (used in error messages and docs)."""
        sig = inspect.signature(self.get(name))
        return [
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        ]

    def create(self, name: str, field: str = "", /, **params: Any) -> T:
        """Instantiate ``name`` with ``params``, turning bad parameters into ConfigError."""
        factory = self.get(name)
        allowed = self.parameters(name)
        unknown = sorted(set(params) - set(allowed))
        where = f"{field}: " if field else ""
        if unknown:
            raise ConfigError(
                f"{where}{self.kind} {name!r} has no parameter {unknown[0]!r}"
                f" (accepts: {', '.join(allowed) or 'none'})"
            )
        try:
            return factory(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}{self.kind} {name!r}: {exc}") from None
