"""A name -> builder registry with "did you mean" suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from segkit.errors import SegkitError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered item: the builder and a one-line description."""

    name: str
    builder: T
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps lower-case names (and aliases) to builders of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, description: str = "", aliases: tuple[str, ...] = (), **tags: Any
    ) -> Callable[[T], T]:
        """Decorator registering ``builder`` under ``name``."""

        def wrap(builder: T) -> T:
            self.add(name, builder, description, aliases, **tags)
            return builder

        return wrap

    def add(
        self,
        name: str,
        builder: T,
        description: str = "",
        aliases: tuple[str, ...] = (),
        **tags: Any,
    ) -> None:
        """Register ``builder`` under ``name`` and optional aliases."""
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._entries[key] = Entry(key, builder, description, tags)
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def resolve(self, name: str) -> str:
        """Canonical name for ``name`` or a SegkitError with suggestions."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key in self._entries:
            return key
        choices = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise SegkitError(
            f"unknown {self.kind} '{name}'; {hint}known: {', '.join(sorted(self._entries))}"
        )

    def get(self, name: str) -> Entry[T]:
        """The entry registered for ``name`` (aliases and any case accepted)."""
        return self._entries[self.resolve(name)]

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[k] for k in sorted(self._entries))

    def names(self) -> list[str]:
        """Sorted canonical names."""
        return sorted(self._entries)
