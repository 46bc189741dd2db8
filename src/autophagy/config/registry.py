"""Named entries of one kind, in registration order: the model families
(:data:`autophagy.config.families.FAMILIES`), the loop strategies
(:data:`autophagy.data.strategies.STRATEGIES`) and the metrics (:data:`autophagy.metric_keys.METRICS`).

Each entry is declared once, next to its code; every list of names, every choice the config
validates and every property another module asks about is read from its registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from autophagy.config.checks import ConfigError


class Named(Protocol):
    name: str


Entry = TypeVar("Entry", bound=Named)


class Registry(Mapping[str, Entry], Generic[Entry]):
    """``name -> entry``; looking up a name that is not registered raises :class:`ConfigError`
    naming ``option`` and every registered name."""

    def __init__(self, option: str):
        self.option = option
        self._entries: dict[str, Entry] = {}

    def register(self, entry: Entry) -> Entry:
        """Add ``entry`` under ``entry.name`` (refused if the name is taken); returns it."""
        if not entry.name or entry.name in self._entries:
            raise ConfigError(
                f"{self.option}: cannot register {entry.name!r}: "
                f"{'the name is empty' if not entry.name else 'the name is registered already'}"
            )
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> Entry:
        """Remove and return the entry ``name`` (a plugin unloaded, a test's toy entry)."""
        entry = self[name]
        del self._entries[name]
        return entry

    def __getitem__(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable value from YAML ([...], {...})
            raise ConfigError(f"{self.option} must be one of {', '.join(self._entries)}, got {name!r}") from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def get(self, name, default=None):
        return self._entries.get(name, default) if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.option}: {', '.join(self._entries)})"
