"""Connecting through a proxy: HTTP CONNECT and SOCKS, for both clients.

``fastws.connect`` and ``fastws.syncclient.connect`` take ``proxy=``: True
(the default) asks the environment (``proxy_for``: ``WSS_PROXY``/``WS_PROXY``,
``SOCKS_PROXY``, ``HTTPS_PROXY``, ``HTTP_PROXY`` for ws://, ``ALL_PROXY``,
with ``NO_PROXY`` honoured), a URL uses that proxy, None connects directly.
``http://[user:password@]host:port`` opens a tunnel with CONNECT (RFC 9110
9.3.6, Basic credentials in ``Proxy-Authorization``); ``socks5://``,
``socks5h://`` (the proxy resolves the name; RFC 1928, with RFC 1929
credentials), ``socks4://``, ``socks4a://``. Each exchange is a sans-I/O
generator run by a blocking or an asyncio driver. The tunnel is a plain
socket: the client then runs TLS (wss://, with the server's name) and the
opening handshake inside it, as on a direct connection.
See docs/guide/client.md#proxies.
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import sys
import time
from typing import Any, Callable, Generator
from urllib.parse import unquote, urlsplit

from .exceptions import InvalidProxy, InvalidURI, ProxyError

__all__ = ["Proxy", "parse_proxy", "proxy_for", "connect_request", "ConnectReader", "check_connect_status",
           "http_connect", "socks5", "socks4", "open_tunnel", "open_tunnel_sync", "SCHEMES", "SOME"]

#: The proxy URL schemes a client understands.
SCHEMES = ("http", "socks5", "socks5h", "socks4", "socks4a")

_DEFAULT_PORTS = {"http": 80, "socks5": 1080, "socks5h": 1080, "socks4": 1080, "socks4a": 1080}
# SOCKS5 replies (RFC 1928 6) after which a reconnecting client tries again:
# general failure, network or host unreachable, connection refused, TTL expired.
# (2, not allowed by the ruleset, 7 and 8, not supported, are for good.)
# SOCKS4 91 is "rejected or failed": the server may be down.
_TRANSIENT_SOCKS_REPLIES = frozenset((1, 3, 4, 5, 6, 91))
# On these, urllib's getproxies also reads the system's settings; elsewhere
# only the environment.
_ENV_ONLY = sys.platform not in ("darwin", "win32")
_MAX_HEAD = 8192
_SECURE_SCHEMES = ("wss", "socks", "https", "all")
_PLAIN_SCHEMES = ("ws", "socks", "https", "http", "all")
_VARIABLES = {secure: tuple(f"{s}_proxy" for s in schemes) + tuple(f"{s.upper()}_PROXY" for s in schemes)
              for secure, schemes in ((True, _SECURE_SCHEMES), (False, _PLAIN_SCHEMES))}
_READ = 4096


class Proxy:
    """A parsed proxy URL. ``repr`` and ``str`` leave the password out."""

    __slots__ = ("scheme", "host", "port", "username", "password")

    def __init__(self, scheme: str, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.username = username
        self.password = password

    def __str__(self) -> str:
        user = f"{self.username}:***@" if self.username is not None else ""
        return f"{self.scheme}://{user}{_authority(self.host, self.port)}"

    def __repr__(self) -> str:
        return f"Proxy({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Proxy) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # (mutable)


def parse_proxy(url: str) -> Proxy:
    """The Proxy of a URL, or InvalidProxy saying what is wrong with it.
    ``host:port`` without a scheme is an HTTP proxy (as curl reads it)."""
    if not isinstance(url, str):
        raise InvalidProxy(f"a proxy is a URL string, True (from the environment) or None, not {url!r}")
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise InvalidProxy(f"invalid proxy URL {_redact(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        hint = " (TLS to the proxy is not supported; an http:// proxy tunnels wss:// too)" if scheme == "https" else ""
        raise InvalidProxy(f"proxy URL {_redact(url)!r}: scheme {scheme!r} is not one of "
                           f"{', '.join(SCHEMES)}{hint}")
    if not host:
        raise InvalidProxy(f"proxy URL {_redact(url)!r} has no host")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in host):
        raise InvalidProxy(f"proxy URL {_redact(url)!r}: bad host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxy(f"proxy URL {_redact(url)!r}: a proxy URL has no path, query or fragment")
    username = password = None
    if parts.username is not None:
        try:
            username = unquote(parts.username, errors="strict")
            password = None if parts.password is None else unquote(parts.password, errors="strict")
        except UnicodeDecodeError:
            raise InvalidProxy(f"proxy URL {_redact(url)!r}: the credentials are not UTF-8") from None
        if scheme.startswith("socks4"):
            if password or "\x00" in username:
                raise InvalidProxy(f"proxy URL {_redact(url)!r}: SOCKS4 has a user id (socks4://id@host), "
                                   "no password")
        elif password is None:
            raise InvalidProxy(f"proxy URL {_redact(url)!r}: a user without a password (user:password@host)")
        elif scheme != "http" and not (0 < len(username.encode()) < 256 and 0 < len(password.encode()) < 256):
            raise InvalidProxy(f"proxy URL {_redact(url)!r}: SOCKS5 credentials are 1 to 255 bytes each")
    return Proxy(scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme], username, password)


def _redact(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            return url.replace(":" + parts.password + "@", ":***@", 1)
    except ValueError:
        pass
    return url


def proxy_for(secure: bool, host: str, port: int) -> str | None:
    """The proxy URL the environment gives for a ws:// (``secure`` False) or
    wss:// server, or None (none set, or ``NO_PROXY`` lists the host).

    Read by urllib (``getproxies``, ``proxy_bypass``: the ``*_proxy``
    variables in either case, and the system's settings on macOS and
    Windows), in this order: ``wss``/``ws``, ``socks``, ``https``, for
    ws:// also ``http``, then ``all`` (``ALL_PROXY``)."""
    schemes = _SECURE_SCHEMES if secure else _PLAIN_SCHEMES
    if _ENV_ONLY:
        # urllib reads the whole of os.environ (a few hundred microseconds);
        # a client that opens thousands of connections asks for a few names.
        environ = os.environ
        for name in _VARIABLES[secure]:
            if name in environ and environ[name]:
                break
        else:
            return None
    import urllib.request  # (what most programs never need)

    proxies = urllib.request.getproxies()
    for scheme in schemes:
        found = proxies.get(scheme)
        if found:
            break
    else:
        return None
    if scheme == "socks" and found.startswith("http://"):
        found = "socks5h://" + found[len("http://"):]  # how macOS's settings come back
    # IPv6: NO_PROXY lists the bare address; else host and host:port both match.
    name = host if ":" in host else f"{host}:{port}"
    if _ENV_ONLY:
        # There proxy_bypass is proxy_bypass_environment: given what was read,
        # it does not read the whole environment again.
        bypassed = urllib.request.proxy_bypass(name, proxies)
    else:
        bypassed = urllib.request.proxy_bypass(name)
    return None if bypassed else found


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(proxy: Proxy, host: str, port: int, user_agent: str | None = None) -> bytes:
    """The CONNECT request for ``host:port`` (RFC 9110 9.3.6: the target is
    the authority, host and port, and so is Host); Basic credentials
    (RFC 7617, UTF-8) when the proxy URL has a user."""
    if not host or any(c.isspace() or ord(c) < 0x21 or c in "/?#@" or ord(c) == 0x7f for c in host):
        raise InvalidURI(f"bad host for a proxy tunnel: {host!r}")
    target = _authority(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if user_agent:
        lines.append(f"User-Agent: {user_agent}")
    if proxy.username is not None:
        token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii", "strict")


class ConnectReader:
    """Reads the proxy's answer to CONNECT, at most ``max_head`` bytes of head.

    ``feed`` returns ``(status, reason)`` once the head of a final response
    is complete (interim 1xx ones are skipped, RFC 9110 15.2), else None.
    The header fields are not needed (a 2xx to CONNECT has no body, RFC 9110
    9.3.6; after another status the connection is dropped) and are only
    checked for size. ``leftover`` holds what came after the head."""

    __slots__ = ("max_head", "_buf", "leftover")

    def __init__(self, max_head: int = _MAX_HEAD) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self.leftover = b""

    def feed(self, data: bytes) -> tuple[int, str] | None:
        buf = self._buf
        start = max(0, len(buf) - 3)
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buf) > self.max_head:
                    raise ProxyError(f"the proxy's answer to CONNECT has a head over {self.max_head} bytes")
                return None
            if end + 4 > self.max_head:
                raise ProxyError(f"the proxy's answer to CONNECT has a head over {self.max_head} bytes")
            status, reason = _status_line(bytes(buf[:buf.find(b"\r\n")]))
            del buf[:end + 4]
            if 100 <= status < 200:
                start = 0
                continue
            self.leftover = bytes(buf)
            buf.clear()
            return status, reason


def _status_line(line: bytes) -> tuple[int, str]:
    parts = line.split(b" ", 2)
    if (len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or len(parts[1]) != 3
            or not parts[1].isdigit()):
        raise ProxyError(f"the proxy did not answer CONNECT with HTTP: {line[:80]!r}")
    reason = parts[2].decode("latin-1") if len(parts) == 3 else ""
    return int(parts[1]), "".join(c for c in reason if c.isprintable())[:80]


def check_connect_status(status: int, reason: str, proxy: Proxy, host: str, port: int) -> None:
    """Raise the ProxyError of a CONNECT answered with a status other than 2xx."""
    if 200 <= status < 300:
        return
    text = f"the proxy {proxy} refused the tunnel to {_authority(host, port)}: HTTP {status} {reason}".rstrip()
    if status in (407, 401):  # (tinyproxy answers wrong credentials with 401)
        text += (": it did not accept the credentials of the proxy URL" if proxy.username is not None
                 else ": it wants credentials (http://user:password@host:port)")
    elif status == 403:
        text += ": it does not allow this destination"
    raise ProxyError(text, status=status, transient=status >= 500 or status == 429)


# --------------------------------------------------------------------------
# The exchanges with the proxy, sans-I/O
# --------------------------------------------------------------------------
#
# Each exchange is a generator of steps: it yields (bytes to send, how much
# to read: n > 0 exactly n bytes, or SOME: what one read returns) and is
# sent what was read (shorter, b"" included, when the proxy ended the
# connection). It returns when the tunnel is open, or raises ProxyError.
# The drivers below run it on a blocking or a non-blocking socket, so both
# clients share every rule; nothing is read past the proxy's last answer.

SOME = -1
Steps = Generator[tuple[bytes, int], bytes, None]


def http_connect(proxy: Proxy, host: str, port: int, user_agent: str | None = None,
                 max_head: int = _MAX_HEAD) -> Steps:
    """HTTP CONNECT (RFC 9110 9.3.6): the request, then the answer's head."""
    reader = ConnectReader(max_head)
    data = yield connect_request(proxy, host, port, user_agent), SOME
    while True:
        if not data:
            raise _closed(proxy)
        answer = reader.feed(data)
        if answer is not None:
            break
        data = yield b"", SOME
    check_connect_status(answer[0], answer[1], proxy, host, port)
    if reader.leftover:
        # The server speaks after the client in both protocols that may run
        # in the tunnel (TLS, the WebSocket handshake): these bytes are the proxy's.
        raise ProxyError(f"the proxy {proxy} sent bytes after its {answer[0]} to CONNECT")


#: RFC 1928 6: the replies of a SOCKS5 server.
SOCKS5_REPLIES = {
    1: "general SOCKS server failure", 2: "connection not allowed by ruleset", 3: "network unreachable",
    4: "host unreachable", 5: "connection refused", 6: "TTL expired", 7: "command not supported",
    8: "address type not supported",
}


def socks5(proxy: Proxy, host: str, port: int, address: str | None = None) -> Steps:
    """SOCKS5 CONNECT (RFC 1928), with username/password (RFC 1929) when
    the URL has a user. ``address``: the server's IP, resolved here
    (socks5://); None sends the name for the proxy to resolve (socks5h://)."""
    name = _socks_name(host) if address is None else b""
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    reply = yield b"\x05" + bytes((len(methods),)) + methods, 2
    if len(reply) < 2:
        hint = "" if proxy.username is not None else " (does it want credentials? socks5://user:password@host:port)"
        raise ProxyError(f"the SOCKS proxy {proxy} closed the connection before the tunnel was open{hint}",
                         transient=True)
    if reply[0] != 5:
        raise ProxyError(f"{proxy} is not a SOCKS5 proxy (it answered {bytes(reply)!r})")
    if reply[1] == 0xFF:
        raise ProxyError(_refused(proxy, "it accepts none of the authentication methods offered"))
    if reply[1] == 2 and proxy.username is not None:
        assert proxy.password is not None
        user, password = proxy.username.encode(), proxy.password.encode()
        reply = yield b"\x01" + bytes((len(user),)) + user + bytes((len(password),)) + password, 2
        # RFC 1929 2: after a failure status the server MUST close; some close
        # without the status. Either way the credentials were refused.
        if len(reply) < 2 or reply[1] != 0:
            raise ProxyError(_refused(proxy, "it did not accept the credentials of the proxy URL"))
    elif reply[1] != 0:
        raise ProxyError(f"the SOCKS proxy {proxy} chose an authentication method it was not offered ({reply[1]})")
    if address is None:
        target = b"\x03" + bytes((len(name),)) + name
    else:
        ip = ipaddress.ip_address(address)
        target = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    reply = yield b"\x05\x01\x00" + target + port.to_bytes(2, "big"), 5
    if len(reply) < 5:
        raise _closed(proxy)
    if reply[0] != 5:
        raise ProxyError(f"the SOCKS proxy {proxy} broke RFC 1928: reply version {reply[0]}")
    if reply[1] != 0:
        code = reply[1]
        why = SOCKS5_REPLIES.get(code, f"reply {code}")
        raise ProxyError(f"the SOCKS proxy {proxy} refused the tunnel to {_authority(host, port)}: {why}",
                         code=code, transient=code in _TRANSIENT_SOCKS_REPLIES)
    # BND.ADDR and BND.PORT: an IPv4 (4 bytes), a name (its length, read
    # already, then the name), an IPv6 (16 bytes); then 2 bytes of port.
    rest = {1: 3 + 2, 4: 15 + 2, 3: reply[4] + 2}.get(reply[3])
    if rest is None:
        raise ProxyError(f"the SOCKS proxy {proxy} broke RFC 1928: address type {reply[3]}")
    bound = yield b"", rest
    if len(bound) < rest:
        raise _closed(proxy)


def socks4(proxy: Proxy, host: str, port: int, address: str | None = None) -> Steps:
    """SOCKS4 CONNECT, or SOCKS4a (``address`` None: the proxy resolves the
    name); the URL's user is the user id."""
    user = (proxy.username or "").encode() + b"\x00"
    if address is None:
        request = b"\x04\x01" + port.to_bytes(2, "big") + b"\x00\x00\x00\x01" + user + _socks_name(host) + b"\x00"
    else:
        ip = ipaddress.ip_address(address)
        if ip.version != 4:
            raise ProxyError(f"the SOCKS4 proxy {proxy} cannot reach the IPv6 address {address}")
        request = b"\x04\x01" + port.to_bytes(2, "big") + ip.packed + user
    reply = yield request, 8
    if len(reply) < 8:
        raise _closed(proxy)
    if reply[0] != 0:
        raise ProxyError(f"{proxy} is not a SOCKS4 proxy (it answered {bytes(reply)!r})")
    if reply[1] != 90:
        why = {91: "request rejected or failed", 92: "no identd", 93: "identd disagrees"}.get(reply[1], str(reply[1]))
        raise ProxyError(f"the SOCKS proxy {proxy} refused the tunnel to {_authority(host, port)}: {why}",
                         code=reply[1], transient=reply[1] in _TRANSIENT_SOCKS_REPLIES)


def _socks_name(host: str) -> bytes:
    try:
        name = host.encode("idna")
    except UnicodeError:
        raise InvalidURI(f"bad host for a SOCKS tunnel: {host!r}") from None
    if not 0 < len(name) < 256 or b"\x00" in name:
        raise InvalidURI(f"bad host for a SOCKS tunnel: {host!r}")
    return name


def _refused(proxy: Proxy, why: str) -> str:
    return f"the SOCKS proxy {proxy} refused: {why}" + (
        "" if proxy.username is not None or "credentials" in why else " (socks5://user:password@host:port)")


def _closed(proxy: Proxy) -> ProxyError:
    return ProxyError(f"the proxy {proxy} closed the connection before the tunnel was open", transient=True)


def _timed_out(proxy: Proxy) -> TimeoutError:
    return TimeoutError(f"the proxy {proxy} did not open the tunnel in time")


def _needs_address(proxy: Proxy, host: str) -> bool:
    """socks5:// and socks4:// send an address: resolve a name here first."""
    if proxy.scheme not in ("socks5", "socks4"):
        return False
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


def _steps(proxy: Proxy, host: str, port: int, address: str | None, user_agent: str | None,
           max_head: int) -> Steps:
    if proxy.scheme == "http":
        return http_connect(proxy, host, port, user_agent, max_head)
    if address is None and proxy.scheme in ("socks5", "socks4"):
        address = host  # an IP literal
    if proxy.scheme.startswith("socks5"):
        return socks5(proxy, host, port, address)
    return socks4(proxy, host, port, address)


def _pick(infos: Any, proxy: Proxy) -> str:
    for family, _, _, _, addr in infos:
        if family == socket.AF_INET or (family == socket.AF_INET6 and proxy.scheme == "socks5"):
            return str(addr[0])
    raise OSError(f"no address of the server that a {proxy.scheme} proxy can reach")


# --------------------------------------------------------------------------
# The drivers: a blocking socket, an asyncio one
# --------------------------------------------------------------------------


def open_tunnel_sync(proxy: Proxy, host: str, port: int, deadline: float,
                     dial: Callable[[str, int, float], socket.socket], user_agent: str | None = None,
                     max_head: int = _MAX_HEAD) -> socket.socket:
    """A blocking socket connected to ``host:port`` through ``proxy``, by
    ``deadline`` (time.monotonic) or TimeoutError. ``dial(host, port,
    timeout)`` connects to the proxy (the sync client's dialer, with its
    source address)."""
    address = None
    if _needs_address(proxy, host):
        address = _pick(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM), proxy)
    steps = _steps(proxy, host, port, address, user_agent, max_head)
    sock = dial(proxy.host, proxy.port, max(deadline - time.monotonic(), 0.001))
    try:
        out, need = next(steps)
        while True:
            if out:
                sock.sendall(out)
            data = b""
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _timed_out(proxy)
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(_READ if need == SOME else need - len(data))
                except socket.timeout:
                    raise _timed_out(proxy) from None
                data += chunk
                if need == SOME or not chunk or len(data) == need:
                    break
            try:
                out, need = steps.send(data)
            except StopIteration:
                return sock
    except BaseException:
        sock.close()
        raise


async def open_tunnel(proxy: Proxy, host: str, port: int, user_agent: str | None = None,
                      max_head: int = _MAX_HEAD) -> socket.socket:
    """A non-blocking socket connected to ``host:port`` through ``proxy``,
    for ``loop.create_connection(sock=...)``. The caller bounds the time
    (``open_timeout``)."""
    loop = asyncio.get_running_loop()
    address = None
    if _needs_address(proxy, host):
        address = _pick(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), proxy)
    steps = _steps(proxy, host, port, address, user_agent, max_head)
    sock = await _dial(loop, proxy.host, proxy.port)
    try:
        out, need = next(steps)
        while True:
            if out:
                await loop.sock_sendall(sock, out)
            data = b""
            while True:
                chunk = await loop.sock_recv(sock, _READ if need == SOME else need - len(data))
                data += chunk
                if need == SOME or not chunk or len(data) == need:
                    break
            try:
                out, need = steps.send(data)
            except StopIteration:
                return sock
    except BaseException:
        sock.close()
        raise


async def _dial(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket: each address of ``host`` in turn."""
    try:
        ip = ipaddress.ip_address(host)
        infos: list[tuple[Any, ...]] = [(socket.AF_INET if ip.version == 4 else socket.AF_INET6,
                                         socket.SOCK_STREAM, 0, "", (host, port))]
    except ValueError:
        infos = list(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    raise last if last is not None else OSError(f"cannot resolve the proxy's host {host!r}")
