"""The provider accounts a server runs with, by provider name: one to act on, or all of them asked at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import anyio

from smsrent.domain.errors import NotConfigured, ProviderError
from smsrent.domain.ids import ProviderName
from smsrent.providers.base import Provider
from smsrent.providers.registry import credential_env

T = TypeVar("T")


class Accounts(Mapping[str, Provider]):
    """The configured providers, read-only, by name."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self._by_name: dict[str, Provider] = {p.name: p for p in providers}

    def __getitem__(self, name: str) -> Provider:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def require(self, name: str) -> Provider:
        """The provider named, or a refusal that says how to configure it."""
        found = self._by_name.get(name)
        if found is None:
            configured = ", ".join(self._by_name) or "none"
            env = credential_env(name) or "its credentials"
            raise NotConfigured(f"Provider {name} is not configured (configured: {configured}); set {env} to use it.")
        return found

    def selected(self, name: ProviderName | None) -> list[Provider]:
        """The provider named, or every one."""
        return [self.require(name)] if name else list(self._by_name.values())

    async def each(
        self, name: ProviderName | None, ask: Callable[[Provider], Awaitable[T]]
    ) -> tuple[list[T], dict[str, str]]:
        """Ask every selected provider at once; one that fails is reported, unless all fail (then it raises)."""
        targets = self.selected(name)
        answers: dict[str, T] = {}
        failures: dict[str, ProviderError] = {}

        async def one(p: Provider) -> None:
            try:
                answers[p.name] = await ask(p)
            except ProviderError as err:
                failures[p.name] = err

        async with anyio.create_task_group() as tg:
            for p in targets:
                tg.start_soon(one, p)
        if not answers:
            raise next(iter(failures.values()))
        return [answers[n] for n in sorted(answers)], {n: e.message for n, e in sorted(failures.items())}
