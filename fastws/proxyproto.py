"""The PROXY protocol, versions 1 and 2 (HAProxy's; what AWS NLB sends): a sans-I/O reader.

A proxy that passes TCP through (HAProxy ``send-proxy`` / ``send-proxy-v2``,
AWS NLB with proxy protocol v2, nginx ``proxy_protocol on`` in its stream
module) writes one header before the client's bytes: the client's address
and port, and the proxy's. ``ProxyHeaderReader.feed`` takes the first bytes
of a connection, finds the header (v1 text or v2 binary, told apart by their
signatures), and returns a ``ProxyHeader`` with what follows it in
``leftover``; anything that is not a complete, well-formed header within its
bound raises ``ProxyHeaderError``, nothing else. Bounds: the v1 line is at
most 107 bytes (the specification's maximum), the v2 address block and TLVs
at most ``V2_MAX_LENGTH`` bytes. TLVs are checked for their framing and
returned, never interpreted. No I/O; the server uses it when
``proxy_protocol=True`` (fastws/server.py). See docs/deployment/proxies.md.
"""
from __future__ import annotations

from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from struct import Struct
from typing import Optional, Tuple, Union

from .exceptions import HandshakeError

__all__ = ["ProxyHeader", "ProxyHeaderReader", "ProxyHeaderError", "parse", "V1_MAX", "V2_SIGNATURE",
           "V2_MAX_LENGTH", "PP2_TYPE_AWS", "PP2_SUBTYPE_AWS_VPCE_ID"]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included ("PROXY UNKNOWN", two full IPv6 addresses, two ports)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The length field of a v2 header counts the address block (216 bytes at
# most, for AF_UNIX) and the TLVs after it. What proxies add stays far below
# this cap: AWS NLB its VPC endpoint id (PP2_TYPE_AWS, about 30 bytes),
# Azure Private Link a link id (8), GCP PSC a connection id (12), HAProxy the
# ALPN, the authority (SNI, at most 255 bytes), a unique id (at most 128),
# TLS details and a CRC32C; all of them together with the largest address
# block fit in about 1 KiB. 2 KiB leaves room for padding (PP2_TYPE_NOOP)
# and keeps what a peer can make us hold before the handshake small next to
# max_head (8 KiB). A longer header is refused as soon as its 16 first bytes
# are in.
V2_MAX_LENGTH = 2048
PP2_TYPE_AWS = 0xEA             # AWS: the first byte of the value is a subtype
PP2_SUBTYPE_AWS_VPCE_ID = 0x01  # ... the id of the VPC endpoint the client came through

_V2_HEAD = 16
_LOCAL, _PROXY = 0x0, 0x1
_ADDRESS_SIZE = {0x11: 12, 0x21: 36, 0x31: 216}  # family/transport byte -> address block (STREAM)
_PORTS = Struct("!HH")

# (host, port) for TCP4, (host, port, 0, 0) for TCP6 (a socket's peername), a path for UNIX
Address = Union[Tuple[str, int], Tuple[str, int, int, int], str]
TLVs = Tuple[Tuple[int, bytes], ...]
Found = Optional[Tuple["ProxyHeader", int]]


class ProxyHeaderError(HandshakeError):
    """The first bytes of a connection are not a valid PROXY protocol header
    (malformed, unknown version or command, too long); ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProxyHeader:
    """A PROXY protocol header.

    version      1 or 2
    command      "PROXY" (a relayed connection) or "LOCAL" (v2: the proxy's
                 own connection, a health check)
    family       "TCP4", "TCP6", "UNIX" or "UNSPEC" (v1 "UNKNOWN", v2 AF_UNSPEC)
    source       the client's address as a socket's peername would give it:
                 ``(host, port)`` for TCP4, ``(host, port, 0, 0)`` for TCP6,
                 the path for UNIX; None for LOCAL and UNSPEC
    destination  the address the client connected to, in the same form
    tlvs         v2: the ``(type, value)`` pairs after the addresses
    """

    __slots__ = ("version", "command", "family", "source", "destination", "tlvs")

    def __init__(self, version: int, command: str, family: str, source: Address | None = None,
                 destination: Address | None = None, tlvs: TLVs = ()) -> None:
        self.version = version
        self.command = command
        self.family = family
        self.source = source
        self.destination = destination
        self.tlvs = tlvs

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of this type, or None."""
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None

    @property
    def aws_vpce_id(self) -> str | None:
        """AWS PrivateLink: the VPC endpoint id the client came through, or None."""
        value = self.tlv(PP2_TYPE_AWS)
        if value is None or value[:1] != bytes([PP2_SUBTYPE_AWS_VPCE_ID]):
            return None
        return str(value[1:].decode("ascii", "replace"))

    def __repr__(self) -> str:
        return (f"<ProxyHeader v{self.version} {self.command} {self.family} "
                f"source={self.source!r} destination={self.destination!r}>")


def parse(data: bytes) -> Found:
    """``(ProxyHeader, bytes consumed)`` for the header at the start of
    ``data``, None if ``data`` is a correct beginning of one that needs more
    bytes; raises ProxyHeaderError otherwise."""
    if data[:6] == V1_PREFIX:
        return _parse_v1(data)
    if data[:12] == V2_SIGNATURE:
        return _parse_v2(data)
    n = len(data)
    if n < 12 and (V1_PREFIX[:n] == data[:6] or V2_SIGNATURE[:n] == data):
        return None
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> Found:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        head = data[:V1_MAX]
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY v1 line longer than {V1_MAX} bytes")
        if not _printable(head[:-1] if head.endswith(b"\r") else head):
            raise ProxyHeaderError("PROXY v1 line with a byte that is not printable ASCII")
        return None
    line = data[6:end]
    parts = line.split(b" ")
    proto = parts[0]
    if proto == b"UNKNOWN":  # "the receiver must ignore anything presented before the CRLF"
        if not _printable(line):
            raise ProxyHeaderError("PROXY v1 line with a byte that is not printable ASCII")
        return ProxyHeader(1, "PROXY", "UNSPEC"), end + 2
    # TCP4 / TCP6: every field is checked to the byte below, so a control or
    # non-ASCII byte fails its field (inet_pton, isdigit: ASCII only).
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("PROXY v1: the protocol is not TCP4, TCP6 or UNKNOWN")
    if len(parts) != 5:
        raise ProxyHeaderError("PROXY v1: not 'PROXY TCPx SRC DST SRCPORT DSTPORT'")
    v6 = proto == b"TCP6"
    source = _v1_address(parts[1], parts[3], v6)
    destination = _v1_address(parts[2], parts[4], v6)
    return ProxyHeader(1, "PROXY", "TCP6" if v6 else "TCP4", source, destination), end + 2


_PRINTABLE = bytes(range(32, 127))


def _printable(raw: bytes) -> bool:
    return not raw.translate(None, _PRINTABLE)


def _v1_address(host: bytes, port: bytes, v6: bool) -> Address:
    # inet_pton (C, strict): four decimal numbers without heading zeroes, or
    # an IPv6 address without a zone; an IPv4 text it accepts is canonical,
    # an IPv6 one is made so by inet_ntop (the form a socket's peername has).
    try:
        text = host.decode("ascii")
        packed = inet_pton(AF_INET6 if v6 else AF_INET, text)
    except (OSError, ValueError):  # UnicodeDecodeError, an embedded NUL: ValueError
        raise ProxyHeaderError(f"PROXY v1: not an IPv{6 if v6 else 4} address") from None
    # "a decimal integer in the range [0..65535] inclusive. Heading zeroes are not permitted"
    n = len(port)
    if not 0 < n <= 5 or not port.isdigit() or (n > 1 and port[0] == 0x30):
        raise ProxyHeaderError("PROXY v1: not a port number")
    number = int(port)
    if number > 65535:
        raise ProxyHeaderError("PROXY v1: not a port number")
    return (inet_ntop(AF_INET6, packed), number, 0, 0) if v6 else (text, number)


def _parse_v2(data: bytes) -> Found:
    if len(data) < _V2_HEAD:
        return None
    version_command = data[12]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2: version {version_command >> 4}, not 2")
    command = version_command & 0xF
    if command not in (_LOCAL, _PROXY):
        raise ProxyHeaderError(f"PROXY v2: unknown command {command}")
    length = data[14] << 8 | data[15]
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v2: {length} bytes of addresses and TLVs, more than {V2_MAX_LENGTH}")
    end = _V2_HEAD + length
    if len(data) < end:
        return None
    if command == _LOCAL:
        # "the receiver must accept this connection as valid and must use the
        # real connection endpoints and discard the protocol block including
        # the family which is ignored"
        return ProxyHeader(2, "LOCAL", "UNSPEC"), end
    family = data[13]
    if family == 0x00:  # AF_UNSPEC: the real endpoints; the block is skipped
        return ProxyHeader(2, "PROXY", "UNSPEC"), end
    size = _ADDRESS_SIZE.get(family)
    if size is None:
        if family in (0x12, 0x22, 0x32):
            raise ProxyHeaderError("PROXY v2: a DGRAM (UDP) header on a stream connection")
        raise ProxyHeaderError(f"PROXY v2: unknown address family and transport 0x{family:02x}")
    if length < size:
        raise ProxyHeaderError(f"PROXY v2: {length} bytes, too short for the addresses ({size})")
    block = data[_V2_HEAD:end]
    source: Address
    destination: Address
    if family == 0x11:
        name = "TCP4"
        sport, dport = _PORTS.unpack_from(block, 8)
        source = (inet_ntop(AF_INET, block[0:4]), sport)
        destination = (inet_ntop(AF_INET, block[4:8]), dport)
    elif family == 0x21:
        name = "TCP6"
        sport, dport = _PORTS.unpack_from(block, 32)
        source = (inet_ntop(AF_INET6, block[0:16]), sport, 0, 0)
        destination = (inet_ntop(AF_INET6, block[16:32]), dport, 0, 0)
    else:
        name = "UNIX"
        source = _unix_path(block[0:108])
        destination = _unix_path(block[108:216])
    return ProxyHeader(2, "PROXY", name, source, destination, _tlvs(block, size) if length > size else ()), end


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(block: bytes, pos: int) -> TLVs:
    """The (type, value) pairs from ``pos`` to the end of the block; each
    must fit in it whole."""
    out = []
    end = len(block)
    while pos < end:
        if end - pos < 3:
            raise ProxyHeaderError("PROXY v2: a truncated TLV")
        size = int.from_bytes(block[pos + 1:pos + 3], "big")
        start = pos + 3
        if start + size > end:
            raise ProxyHeaderError("PROXY v2: a TLV longer than the header")
        out.append((block[pos], block[start:start + size]))
        pos = start + size
    return tuple(out)


class ProxyHeaderReader:
    """Reads the PROXY header at the start of a connection, fed the reads in
    order: ``feed(data)`` returns None until the header is complete, then the
    ``ProxyHeader`` (``leftover``: the bytes after it, the start of the
    client's own). Raises ProxyHeaderError on a malformed or overlong header;
    holds at most one read plus the longest header meanwhile."""

    __slots__ = ("_buf", "leftover")

    def __init__(self) -> None:
        self._buf = b""
        self.leftover = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        buf = self._buf + data if self._buf else data
        found = parse(buf)
        if found is None:
            self._buf = buf
            return None
        header, consumed = found
        self._buf = b""
        self.leftover = buf[consumed:]
        return header
