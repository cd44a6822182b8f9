"""Same-origin policy of the browser-facing apps (chat, push).

A request whose ``Origin`` is present and names another site than its
``Host`` is refused with 403, unless the origin is in the app's ``origins``
list (``--origins``; ``*`` admits every origin). Requests without ``Origin``
(curl, backends, non-browser clients) are admitted: every browser sends one on
a WebSocket upgrade and on a cross-site POST.
See docs/guide/cli.md#same-origin-and-allowed-hosts.
"""
from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["OriginPolicy"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _origin_key(origin: str):
    """``scheme://host[:port]`` lower-cased without the scheme's default port,
    and ``host[:port]`` alone; (None, None) for an opaque origin ("null")."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None, None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host:
        return None, None
    if ":" in host:
        host = f"[{host}]"
    authority = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return f"{scheme}://{authority}", authority


def _host_key(host: str) -> str:
    host = host.strip().lower()
    for default in (":80", ":443"):
        if host.endswith(default):
            return host[: -len(default)]
    return host


class OriginPolicy:
    """``allows(request)``: no ``Origin``, or one on the ``Host`` of the
    request, or one of ``origins`` (``"*"``: any)."""

    __slots__ = ("any", "extra")

    def __init__(self, origins=None):
        if isinstance(origins, str):
            raise ValueError("origins must be a list of origins, not a single string")
        self.any = False
        extra = set()
        for origin in origins or ():
            if origin is None:
                continue  # clients without Origin are always admitted
            if origin.strip() == "*":
                self.any = True
                continue
            key, _ = _origin_key(origin)
            extra.add(key if key is not None else origin.strip().lower())  # "null" stays "null"
        self.extra = frozenset(extra)

    def allows(self, request) -> bool:
        headers = request.headers
        values = headers.get_all("origin") if hasattr(headers, "get_all") else None
        if values is None:
            origin = headers.get("origin")
            values = [] if origin is None else [origin]
        if not values:
            return True
        if len(values) > 1:
            return False
        if self.any:
            return True
        key, authority = _origin_key(values[0])
        if key is None:
            return values[0].strip().lower() in self.extra
        if key in self.extra:
            return True
        host = headers.get("host")
        return host is not None and authority == _host_key(host)
