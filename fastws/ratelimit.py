"""Access control that is not authentication: rate options and per-address limits.

- ``rate_option`` / ``parse_rate``: ``rate_limit`` / ``rate_limit_bytes`` as
  ``(rate, burst)`` from a tuple, a number or ``"100/s"``, ``"1MiB/s:4MiB"``
  (the per-message count is the codec's ``Limiter``);
- ``TrustedProxies``: ``forwarded_allow_ips``, and the client's address from
  ``Forwarded`` / ``X-Forwarded-For`` when the peer is a trusted proxy;
- ``ClientLimits``: ``limit_connections_per_ip`` and
  ``limit_handshakes_per_ip``, refused with 429 and ``Retry-After``; one dict
  entry per address with open connections or a bucket not yet full again.
See docs/guide/access-control.md.
"""
from __future__ import annotations

import ipaddress
import math
import re
import time

from .exceptions import ConfigError, InvalidRequest

__all__ = ["rate_option", "parse_rate", "TrustedProxies", "ClientLimits", "forwarded_option"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}
_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.I)


def _amount(text: str, what: str) -> float:
    m = _AMOUNT.match(text)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what}: not an amount: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_rate(text: str, name: str = "rate") -> tuple:
    """``"100/s"``, ``"100/s:300"``, ``"1MiB/s"``, ``"6000/min"``, ``"50"``
    (per second) -> ``(rate per second, burst)``; the burst is twice the
    per-second rate unless given after ``:``."""
    if not isinstance(text, str):
        raise ConfigError(f"{name} must be a string such as '100/s', got {text!r}")
    head, _, burst_text = text.partition(":")
    amount, _, period = head.partition("/")
    count = _amount(amount, name)
    seconds = 1.0
    if period:
        p = period.strip().lower()
        m = re.match(r"^([0-9]*\.?[0-9]*)\s*([a-z]+)$", p)
        if m is None or m.group(2) not in _PERIODS:
            raise ConfigError(f"{name}: not a period: {period!r} (use /s, /min or /h)")
        seconds = (float(m.group(1)) if m.group(1) else 1.0) * _PERIODS[m.group(2)]
        if seconds <= 0:
            raise ConfigError(f"{name}: the period must be > 0, got {period!r}")
    rate = count / seconds
    burst = _amount(burst_text, name) if burst_text.strip() else 2 * rate
    return _check_rate(name, rate, burst)


def _check_rate(name, rate, burst) -> tuple:
    for what, v in (("rate", rate), ("burst", burst)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"{name}: the {what} must be a number > 0, got {v!r}")
    if burst < 1:
        raise ConfigError(f"{name}: the burst must be >= 1 (one message passes at least), got {burst!r}")
    return (float(rate), float(burst))


def rate_option(name: str, value):
    """Validate ``rate_limit`` / ``rate_limit_bytes``: None (off), ``(rate,
    burst)``, a number (rate per second, burst twice that) or a string
    (``parse_rate``). Returns None or ``(rate, burst)``."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_rate(value, name)
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(f"{name} must be (rate, burst), got {value!r}")
        return _check_rate(name, value[0], value[1])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _check_rate(name, value, 2 * value)
    raise ConfigError(f"{name} must be None, (rate, burst), a number or a string such as '100/s', got {value!r}")


# --------------------------------------------------------------------------
# Client addresses behind proxies
# --------------------------------------------------------------------------

def forwarded_option(value):
    """``forwarded_allow_ips``: a list (or comma-separated string) of
    addresses, CIDRs, ``*`` (any peer) or ``unix:`` (Unix socket peers)."""
    return TrustedProxies(value)


class TrustedProxies:
    """The peers whose ``Forwarded`` / ``X-Forwarded-For`` are believed."""

    __slots__ = ("any", "unix", "networks", "addresses", "spec")

    def __init__(self, value=("127.0.0.1",)):
        if value is None:
            value = ()
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        self.spec = list(value)
        self.any = False
        self.unix = False
        self.networks = []
        self.addresses = set()
        for item in self.spec:
            if not isinstance(item, str):
                raise ConfigError(f"forwarded_allow_ips: not an address: {item!r}")
            if item == "*":
                self.any = True
            elif item == "unix:":
                self.unix = True
            else:
                try:
                    if "/" in item:
                        self.networks.append(ipaddress.ip_network(item, strict=False))
                    else:
                        self.addresses.add(ipaddress.ip_address(item))
                except ValueError:
                    raise ConfigError(f"forwarded_allow_ips: not an address or CIDR: {item!r}") from None

    def trusts(self, address) -> bool:
        """Whether ``address`` (a string, or None/"" for a Unix socket peer) is a trusted proxy."""
        if self.any:
            return True
        if not address:
            return self.unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip in self.addresses:
            return True
        if ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped in self.addresses:
            return True
        return any(ip in net for net in self.networks)

    def client_address(self, peer, headers) -> str:
        """The client's address: the peer's, or when the peer is trusted, the
        right-most address of ``Forwarded`` (else ``X-Forwarded-For``) that is
        not itself a trusted proxy."""
        host = peer[0] if isinstance(peer, tuple) and peer else (peer or "")
        if not self.trusts(host):
            return host
        forwarded = headers.get_all("Forwarded")
        if forwarded:
            hops = _forwarded_for(forwarded)
        else:
            hops = [h.strip() for line in headers.get_all("X-Forwarded-For") for h in line.split(",")]
        for hop in reversed(hops):
            hop = _strip_port(hop)
            if not hop:
                break  # "unknown" or obfuscated: stop at the last known proxy
            if not self.trusts(hop):
                return hop
            host = hop
        return host


_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.I)


def _forwarded_for(lines) -> list:
    """The ``for=`` values of RFC 7239 ``Forwarded`` lines, in order."""
    out = []
    for line in lines:
        for element in line.split(","):
            m = _FOR.search(element)
            if m is None:
                out.append("")
                continue
            v = m.group(1)
            if v.startswith('"'):
                v = v[1:-1].replace('\\"', '"')
            out.append(v)
    return out


def _strip_port(hop: str) -> str:
    """``"[2001:db8::1]:443"`` -> ``"2001:db8::1"``, ``"1.2.3.4:80"`` -> ``"1.2.3.4"``;
    "" for anything that is not an IP address (``unknown``, ``_hidden``)."""
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1:hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return ""


# --------------------------------------------------------------------------
# Per-address limits
# --------------------------------------------------------------------------

def _limit_option(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0 (or None: no limit), got {value!r}")
    return value


def _too_many(text: str, retry_after: int, reason: str) -> InvalidRequest:
    exc = InvalidRequest(429, "Too Many Requests", [("Retry-After", str(retry_after))], text)
    exc.metric_reason = reason
    return exc


class ClientLimits:
    """``limit_connections_per_ip`` and ``limit_handshakes_per_ip`` of one server."""

    __slots__ = ("connections", "handshakes", "proxies", "open", "_tat", "_step", "_tol", "_prune_at",
                 "_clock", "retry_after")

    def __init__(self, connections=None, handshakes=None, proxies=None, *, retry_after: int = 5,
                 clock=time.monotonic):
        self.connections = _limit_option("limit_connections_per_ip", connections)
        if self.connections is not None and self.connections != int(self.connections):
            raise ConfigError(f"limit_connections_per_ip must be a whole number, got {connections!r}")
        if isinstance(handshakes, str):
            handshakes = parse_rate(handshakes, "limit_handshakes_per_ip")[0]
        self.handshakes = _limit_option("limit_handshakes_per_ip", handshakes)
        self.proxies = proxies if proxies is not None else TrustedProxies()
        self.open: dict = {}   # address -> connections counted (admitted, not yet lost)
        self._tat: dict = {}   # address -> theoretical arrival time of its handshake bucket
        if self.handshakes is not None:
            self._step = 1.0 / self.handshakes
            self._tol = max(1.0, self.handshakes) * self._step + 1e-9  # a burst of N (at least 1)
        else:
            self._step = self._tol = 0.0
        self._prune_at = 1024
        self._clock = clock
        self.retry_after = retry_after

    @property
    def active(self) -> bool:
        return self.connections is not None or self.handshakes is not None

    def admit(self, address: str) -> str:
        """Count a handshake from ``address``; raise InvalidRequest(429) if
        over a limit. Returns the key to give back to ``release`` when the
        connection ends."""
        if self.handshakes is not None:
            tat_map = self._tat
            now = self._clock()
            tat = tat_map.get(address, now)
            if tat < now:
                tat = now
            if tat - now + self._step > self._tol:
                wait = tat - now + self._step - self._tol
                raise _too_many("too many handshakes from this address", max(1, math.ceil(wait)),
                                "handshakes_per_ip")
            tat_map[address] = tat + self._step
            if len(tat_map) >= self._prune_at:
                self._prune(now)
        if self.connections is not None:
            n = self.open.get(address, 0)
            if n >= self.connections:
                raise _too_many("too many connections from this address", self.retry_after,
                                "connections_per_ip")
            self.open[address] = n + 1
        return address

    def release(self, address: str) -> None:
        """A connection counted by ``admit`` ended."""
        if self.connections is None:
            return
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)

    def _prune(self, now: float) -> None:
        """Forget the buckets that are full again (they are as good as absent)."""
        tat_map = self._tat
        for address in [a for a, tat in tat_map.items() if tat <= now]:
            del tat_map[address]
        self._prune_at = max(1024, 2 * len(tat_map))
