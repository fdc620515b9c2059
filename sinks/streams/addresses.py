"""Where a stream's requests may go: every address is checked before a connection to it is opened.

Link-local addresses (169.254.0.0/16, fe80::/10) and cloud metadata endpoints (169.254.169.254,
fd00:ec2::254) are always refused: an endpoint URL must never turn the sink into a way to read instance
credentials. Unspecified and multicast addresses are refused too. Everything else (private ranges
included: self-hosted endpoints are often internal) is allowed unless the operator's settings say
otherwise (:class:`~inflow.sinks.streams.settings.SinkSettings`).

The policy is applied twice: to a URL whose host is a literal address when a stream is defined or
started, and to every address a host name resolves to, before aiohttp connects (:class:`GuardedResolver`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from inflow.sinks.streams.settings import SinkSettings

ALWAYS_REFUSED = (
    (ip_network("169.254.0.0/16"), "link-local / cloud metadata"),
    (ip_network("fe80::/10"), "link-local"),
    (ip_network("fd00:ec2::254/128"), "cloud metadata"),
    (ip_network("0.0.0.0/8"), "unspecified"),
    (ip_network("::/128"), "unspecified"),
    (ip_network("224.0.0.0/4"), "multicast"),
    (ip_network("ff00::/8"), "multicast"),
)
# The built-in refusals alone, whatever the environment says (used when a definition is validated).
BUILT_IN_ONLY = SinkSettings.model_construct(allow_networks=(), deny_networks=())


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the sink may connect to an address, and why not."""

    allowed: bool
    reason: str = ""


def decide(address: str | IPv4Address | IPv6Address, settings: SinkSettings) -> Verdict:
    """The policy for one address: built-in refusals, then the deny list, then the allow list if set."""
    try:
        ip = ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return Verdict(False, f"{address!r} is not an IP address")
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    for network, what in ALWAYS_REFUSED:
        if ip.version == network.version and ip in network:
            return Verdict(False, f"address {ip} is refused ({what}, {network})")
    for network in settings.deny_networks:
        if ip.version == network.version and ip in network:
            return Verdict(False, f"address {ip} is refused (INFLOW_SINK_DENY_NETWORKS: {network})")
    if settings.allow_networks and not any(
        ip.version == n.version and ip in n for n in settings.allow_networks
    ):
        return Verdict(False, f"address {ip} is refused (not in INFLOW_SINK_ALLOW_NETWORKS)")
    return Verdict(True)


def literal_host_verdict(url: str, settings: SinkSettings) -> Verdict:
    """The policy for a URL whose host is a literal IP address; host names are checked once resolved."""
    host = urlsplit(url).hostname or ""
    try:
        ip_address(host.split("%", 1)[0])
    except ValueError:
        return Verdict(True)
    return decide(host, settings)


class AddressRefused(OSError):
    """Every address of a host name is refused by the sink's outbound policy."""


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy allows; none left refuses the request."""

    def __init__(self, settings: SinkSettings) -> None:
        self._settings = settings
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = []
        refused = []
        for result in found:
            verdict = decide(result["host"], self._settings)
            if verdict.allowed:
                allowed.append(result)
            else:
                refused.append(verdict.reason)
        if not allowed:
            why = "; ".join(refused) or "no address"
            raise AddressRefused(f"{host} resolves only to refused addresses: {why}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
