"""The PROXY protocol reader (fastws/proxyproto.py), sans I/O.

v1 and v2 headers built here byte by byte after HAProxy's specification
(doc/proxy-protocol.txt), fed whole, cut at every point and one byte at a
time; every malformed, truncated-then-garbage or overlong header raises
ProxyHeaderError; and hypothesis: random bytes (alone, or after a valid
signature) never raise anything else.
"""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastws.proxyproto import (
    PP2_TYPE_AWS,
    V1_MAX,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeaderError,
    ProxyHeaderReader,
    parse,
)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command=1, family=0x11, block=b"", version=2, length=None):
    """A v2 header: signature, version/command, family/transport, length, block."""
    n = len(block) if length is None else length
    return V2_SIGNATURE + bytes([(version << 4) | command, family]) + struct.pack("!H", n) + block


def inet4(src="192.0.2.7", dst="198.51.100.1", sport=50000, dport=443):
    return socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst) + struct.pack(
        "!HH", sport, dport)


def inet6(src="2001:db8::7", dst="2001:db8::1", sport=50000, dport=443):
    return socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + struct.pack(
        "!HH", sport, dport)


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def feed_all(chunks):
    reader = ProxyHeaderReader()
    header = None
    for i, chunk in enumerate(chunks):
        header = reader.feed(chunk)
        if header is not None:
            rest = b"".join(chunks[i + 1:])
            return header, reader.leftover + rest
    return None, b""


# ------------------------------------------------------------------ v1
V1_CASES = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 443\r\n", "TCP4", ("192.0.2.7", 50000), ("198.51.100.1", 443)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 443\r\n", "TCP6", ("2001:db8::7", 50000, 0, 0),
     ("2001:db8::1", 443, 0, 0)),
    # canonical form: the address as the socket module would give it
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 0 65535\r\n", "TCP6", ("2001:db8::7", 0, 0, 0), ("::1", 65535, 0, 0)),
    (b"PROXY UNKNOWN\r\n", "UNSPEC", None, None),
    # "the receiver must ignore anything presented before the CRLF"
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "UNSPEC", None, None),
]


@pytest.mark.parametrize("line, family, source, destination", V1_CASES)
def test_v1_headers_whole_and_cut_at_every_byte(line, family, source, destination):
    data = line + REQUEST
    for cut in range(len(data) + 1):
        header, rest = feed_all([data[:cut], data[cut:]])
        assert header is not None, cut
        assert (header.version, header.command, header.family) == (1, "PROXY", family)
        assert header.source == source and header.destination == destination
        assert rest == REQUEST
    header, rest = feed_all([bytes([b]) for b in data])
    assert header.source == source and rest == REQUEST


def test_v1_longest_line_is_107_bytes():
    # the specification's sum: "5 + 1 + 7 + 1 + 39 + 1 + 39 + 1 + 5 + 1 + 5 + 2 = 107"
    v6 = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = b"PROXY UNKNOWN " + v6 + b" " + v6 + b" 65535 65535\r\n"
    assert len(longest) == V1_MAX == 107
    header, consumed = parse(longest + REQUEST)
    assert consumed == 107 and header.family == "UNSPEC"
    header, consumed = parse(b"PROXY TCP6 " + v6 + b" " + v6 + b" 65535 65535\r\n")
    assert consumed == 104 and header.source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 0, 0)
    # 107 bytes without a CRLF: refused, whatever follows
    with pytest.raises(ProxyHeaderError, match="longer than 107"):
        parse(b"PROXY UNKNOWN " + b"x" * 93)
    assert parse(b"PROXY UNKNOWN " + b"x" * 92) is None  # 106 bytes: still a possible line


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 50000\r\n",             # a field missing
    b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 443 1\r\n",       # one too many
    b"PROXY TCP4  192.0.2.7 198.51.100.1 50000 443\r\n",        # two spaces
    b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 443 \r\n",        # a trailing space
    b"PROXY TCP4 192.0.2.256 198.51.100.1 50000 443\r\n",       # not an address
    b"PROXY TCP4 192.0.2.07 198.51.100.1 50000 443\r\n",        # a heading zero (octal?)
    b"PROXY TCP4 2001:db8::7 198.51.100.1 50000 443\r\n",       # IPv6 in TCP4
    b"PROXY TCP6 192.0.2.7 2001:db8::1 50000 443\r\n",          # IPv4 in TCP6
    b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",         # port out of range
    b"PROXY TCP4 192.0.2.7 198.51.100.1 050000 443\r\n",        # heading zero
    b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 443\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1 1_0 443\r\n",
    b"PROXY TCP4 192.0.2.7 198.51.100.1  443\r\n",              # empty port
    b"PROXY UDP4 192.0.2.7 198.51.100.1 50000 443\r\n",         # not TCP
    b"PROXY tcp4 192.0.2.7 198.51.100.1 50000 443\r\n",         # case matters
    b"PROXY \r\n",
    b"PROXY TCP4 192.0.2.7\t198.51.100.1 50000 443\r\n",        # a tab
    b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 443\n",           # LF alone
    b"PROXY UNKNOWN \xff\r\n",                                  # not ASCII
    b"PROXY TCP4 \xd9\xa1.0.2.7 198.51.100.1 50000 443\r\n",    # an Arabic-Indic digit
    b"PROXY TCP4 192.0.2.7 198.51.100.1 \xd9\xa1 443\r\n",
    b"proxy TCP4 192.0.2.7 198.51.100.1 50000 443\r\n",         # not the signature
    b"PROXYTCP4 192.0.2.7 198.51.100.1 50000 443\r\n",
    b" PROXY TCP4 192.0.2.7 198.51.100.1 50000 443\r\n",
    b"GET / HTTP/1.1\r\n",                                      # no header at all
    b"\x16\x03\x01\x02\x00",                                    # a TLS ClientHello
])
def test_v1_malformed_lines_are_refused(line):
    with pytest.raises(ProxyHeaderError):
        parse(line + REQUEST)
    with pytest.raises(ProxyHeaderError):
        feed_all([bytes([b]) for b in line + REQUEST])


def test_v1_garbage_is_refused_before_107_bytes():
    """A control byte or a lone LF ends the wait at once: no need to hold 107 bytes."""
    for early in (b"PROXY TCP4 1.2.3.4\n", b"PROXY TCP4 \x00", b"PROXY \x80"):
        with pytest.raises(ProxyHeaderError):
            parse(early)
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is None  # CR: the LF may come next


# ------------------------------------------------------------------ v2
def test_v2_tcp4_tcp6_unix_and_their_tlvs_cut_at_every_byte():
    aws = tlv(PP2_TYPE_AWS, b"\x01vpce-0123456789abcdef0")
    cases = [
        (v2(block=inet4() + aws), "TCP4", ("192.0.2.7", 50000), ("198.51.100.1", 443)),
        (v2(family=0x21, block=inet6()), "TCP6", ("2001:db8::7", 50000, 0, 0), ("2001:db8::1", 443, 0, 0)),
        (v2(family=0x31, block=b"/run/client.sock".ljust(108, b"\0") + b"/run/ws.sock".ljust(108, b"\0")),
         "UNIX", "/run/client.sock", "/run/ws.sock"),
    ]
    for data, family, source, destination in cases:
        data = data + REQUEST
        for cut in range(len(data) + 1):
            header, rest = feed_all([data[:cut], data[cut:]])
            assert (header.version, header.command, header.family) == (2, "PROXY", family), cut
            assert header.source == source and header.destination == destination
            assert rest == REQUEST
    header, _ = parse(cases[0][0])
    assert header.tlvs == ((PP2_TYPE_AWS, b"\x01vpce-0123456789abcdef0"),)
    assert header.aws_vpce_id == "vpce-0123456789abcdef0"
    assert parse(v2(block=inet4()))[0].aws_vpce_id is None


def test_v2_local_keeps_the_socket_address_and_skips_the_block():
    """LOCAL (a health check): "the receiver must ... use the real connection
    endpoints and discard the protocol block including the family"."""
    for data in (v2(command=0, family=0), v2(command=0, family=0x11, block=inet4()),
                 v2(command=0, family=0x99, block=b"anything")):
        header, consumed = parse(data + REQUEST)
        assert header.command == "LOCAL" and header.source is None and consumed == len(data)


def test_v2_unspec_family_uses_the_socket_address():
    header, consumed = parse(v2(family=0x00, block=b"\x01\x02\x03") + REQUEST)
    assert (header.family, header.source, consumed) == ("UNSPEC", None, 19)


def test_v2_tlvs_are_skipped_whatever_their_type():
    block = inet4() + tlv(0x04, b"") + tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0xEE, b"\x01" * 5)
    header, consumed = parse(v2(block=block))
    assert [t for t, _ in header.tlvs] == [0x04, 0x01, 0x02, 0xEE]
    assert header.tlv(0x02) == b"example.com" and header.tlv(0x30) is None


def test_v2_length_is_capped_before_the_bytes_arrive():
    """A length over V2_MAX_LENGTH is refused from the 16 first bytes alone:
    nothing of it is waited for or held."""
    padding = tlv(0x04, b"\0" * (V2_MAX_LENGTH - 12 - 3))
    header, _ = parse(v2(block=inet4() + padding))  # exactly the cap: accepted
    assert header.source == ("192.0.2.7", 50000)
    with pytest.raises(ProxyHeaderError, match="more than"):
        parse(v2(length=V2_MAX_LENGTH + 1))
    with pytest.raises(ProxyHeaderError, match="more than"):
        parse(v2(length=0xFFFF))
    assert parse(v2(length=V2_MAX_LENGTH)) is None  # within the cap: waits for the rest


@pytest.mark.parametrize("data, why", [
    (v2(version=1, block=inet4()), "version"),
    (v2(version=3, block=inet4()), "version"),
    (v2(command=2, block=inet4()), "command"),
    (v2(command=0xF, block=inet4()), "command"),
    (v2(family=0x12, block=inet4()), "DGRAM"),
    (v2(family=0x22, block=inet6()), "DGRAM"),
    (v2(family=0x32, block=b"\0" * 216), "DGRAM"),
    (v2(family=0x10, block=inet4()), "unknown"),
    (v2(family=0x13, block=inet4()), "unknown"),
    (v2(family=0x41, block=inet4()), "unknown"),
    (v2(family=0x01, block=inet4()), "unknown"),
    (v2(block=inet4()[:11]), "too short"),
    (v2(family=0x21, block=inet4()), "too short"),
    (v2(family=0x31, block=b"\0" * 215), "too short"),
    (v2(block=inet4() + b"\x04\x00"), "truncated TLV"),
    (v2(block=inet4() + b"\x04"), "truncated TLV"),
    (v2(block=inet4() + tlv(0x04, b"abc")[:-1]), "longer than the header"),
    (v2(block=inet4() + b"\x04\xff\xff"), "longer than the header"),
])
def test_v2_malformed_headers_are_refused(data, why):
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data + REQUEST)


def test_a_truncated_header_waits_and_a_signature_prefix_is_not_an_error():
    for data in (v2(block=inet4()), b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 443\r\n"):
        for cut in range(len(data)):
            assert parse(data[:cut]) is None, cut
    with pytest.raises(ProxyHeaderError, match="not a PROXY"):
        parse(V2_SIGNATURE[:5] + b"x")


# ------------------------------------------------------------------ random bytes
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"PROXY " + b),
    st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)).map(
        lambda t: v2(command=t[0] & 0xF, version=t[0] >> 4, family=t[1], block=t[2])),
    st.tuples(st.sampled_from([b"TCP4", b"TCP6", b"UNKNOWN"]), st.lists(
        st.text("0123456789abcdef.:", max_size=40).map(str.encode), max_size=6)).map(
        lambda t: b"PROXY " + b" ".join([t[0], *t[1]]) + b"\r\n"),
), st.lists(st.integers(0, 400), max_size=4))
def test_random_bytes_raise_only_proxy_header_error(data, cuts):
    """Whole or in pieces, random input gives a header, a wait, or a
    ProxyHeaderError; a header returned is well-formed and the reader never
    holds more than the input."""
    try:
        found = parse(data)
    except ProxyHeaderError:
        found = "error"
    pieces, last = [], 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    try:
        header, rest = feed_all(pieces)
    except ProxyHeaderError:
        assert found == "error"  # in pieces, the same verdict as whole
        return
    if header is None:
        assert found is None
        assert len(data) < max(V1_MAX, 16 + V2_MAX_LENGTH)
        return
    assert found != "error" and found is not None
    assert found[0].source == header.source and rest == data[found[1]:]
    if header.source is not None:
        assert header.family in ("TCP4", "TCP6", "UNIX")
    assert header.command in ("PROXY", "LOCAL") and header.version in (1, 2)
