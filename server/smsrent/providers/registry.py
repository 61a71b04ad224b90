"""The provider registry: each provider's name mapped to its adapter class (which declares its display name,
credential, ids and capabilities) and to how it is built, from the settings and as an in-process sandbox.

A new provider is its adapter module and one `register` call; the service and MCP layers only ever see the
`Provider` protocol and the optional-feature protocols of `base`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

import httpx
from pydantic import SecretStr

from smsrent.domain.ids import forget_ids, register_ids
from smsrent.providers.base import HttpProvider, Provider
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider

if TYPE_CHECKING:
    from smsrent.config import Settings
    from smsrent.sandbox.base import SandboxServer


@dataclass
class Providers:
    """The provider adapters a server runs with, and the sandboxes behind them (if any)."""

    adapters: list[Provider]
    sandboxes: list[SandboxServer] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderEntry:
    """One provider: its adapter class, how it is built from the settings (None when its credentials are not set),
    and how it is built over its in-process sandbox (None if it has none)."""

    adapter: type[HttpProvider]
    build: Callable[[Settings, httpx.Timeout], Provider | None]
    sandbox: Callable[[], tuple[Provider, SandboxServer]] | None = None

    @property
    def name(self) -> str:
        return self.adapter.name


_ENTRIES: dict[str, ProviderEntry] = {}


def register(entry: ProviderEntry) -> None:
    """Add (or replace) a provider: from now on its ids parse, and the settings and the sandbox mode build it."""
    register_ids(entry.name, entry.adapter.ids)
    _ENTRIES[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a provider: its ids are refused again."""
    _ENTRIES.pop(name, None)
    forget_ids(name)


def entries() -> Mapping[str, ProviderEntry]:
    """The registered providers, read-only, in registration order."""
    return MappingProxyType(_ENTRIES)


def credential_env(name: str) -> str | None:
    """The setting that configures provider `name`, if it is registered."""
    entry = _ENTRIES.get(name)
    return entry.adapter.credential_env if entry else None


def configured_providers(settings: Settings) -> Providers:
    """The registered providers whose credentials are set."""
    timeout = httpx.Timeout(settings.provider_timeout, connect=min(5.0, settings.provider_timeout))
    built = (entry.build(settings, timeout) for entry in _ENTRIES.values())
    return Providers([adapter for adapter in built if adapter is not None])


def sandbox_providers() -> Providers:
    """Every registered provider that has a sandbox, reached by its real adapter through in-process ASGI."""
    pairs = [entry.sandbox() for entry in _ENTRIES.values() if entry.sandbox is not None]
    return Providers([adapter for adapter, _ in pairs], [sandbox for _, sandbox in pairs])


# -- The built-in providers ------------------------------------------------------------------------------------


def _gotsms(settings: Settings, timeout: httpx.Timeout) -> Provider | None:
    if settings.gotsms_api_token is None:
        return None
    return GotSmsProvider(settings.gotsms_api_token, base_url=settings.gotsms_base_url, timeout=timeout)


def _gotsms_sandbox() -> tuple[Provider, SandboxServer]:
    from smsrent.sandbox.gotsms import GotSmsSandbox

    sandbox = GotSmsSandbox()
    adapter = GotSmsProvider(
        SecretStr(sandbox.token),
        base_url="http://gotsms.sandbox/api",
        transport=httpx.ASGITransport(app=sandbox.app),
        sandbox=True,
    )
    return adapter, sandbox


def _getatext(settings: Settings, timeout: httpx.Timeout) -> Provider | None:
    if settings.getatext_api_key is None:
        return None
    return GetatextProvider(
        settings.getatext_api_key,
        base_url=settings.getatext_base_url,
        timeout=timeout,
        use_handler_api=settings.getatext_use_handler_api,
        tz=settings.provider_tz,
        long_prices=settings.getatext_long_rental_prices,
    )


def _getatext_sandbox() -> tuple[Provider, SandboxServer]:
    from smsrent.sandbox.getatext import LONG_PRICES, TZ, GetatextSandbox

    sandbox = GetatextSandbox()
    adapter = GetatextProvider(
        SecretStr(sandbox.api_key),
        base_url="http://getatext.sandbox",
        transport=httpx.ASGITransport(app=sandbox.app),
        tz=TZ,
        long_prices=LONG_PRICES,
        sandbox=True,
    )
    return adapter, sandbox


register(ProviderEntry(GotSmsProvider, _gotsms, _gotsms_sandbox))
register(ProviderEntry(GetatextProvider, _getatext, _getatext_sandbox))
