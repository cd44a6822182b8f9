"""permessage-deflate (RFC 7692): negotiation and the per-message codec.

Off by default on the server (``compression=None``). ``negotiate`` accepts the
first acceptable offer of a client (declined offers fall through; a header
that is not valid syntax is refused with 400); ``client_offer`` and
``client_accept`` are the client's side. ``PerMessageDeflate`` inflates a whole
message with a bound of ``max_size`` (a bomb ends with 1009, bad data with
1007) and compresses messages of at least ``compression_threshold`` bytes;
compressors and decompressors are made on first use and shared per thread
when there is no context takeover. The connection sends through it
(``fastws.protocol``); the compress-once fan-out is in ``fastws.pubsub``.
This module imports nothing from the asyncio layer.

See docs/guide/compression.md.
"""
from __future__ import annotations

import re
import threading
import zlib

from .exceptions import MessageTooBig, ProtocolError
from .options import Options

__all__ = [
    "DeflateParams",
    "PerMessageDeflate",
    "parse_extensions",
    "negotiate",
    "client_offer",
    "client_options",
    "client_accept",
    "compress",
]

EXTENSION = "permessage-deflate"
TAIL = b"\x00\x00\xff\xff"
_SYNC = zlib.Z_SYNC_FLUSH
_PARAMS = frozenset(("server_no_context_takeover", "client_no_context_takeover",
                     "server_max_window_bits", "client_max_window_bits"))
_BITS = re.compile(r"(?:[89]|1[0-5])\Z")

# --------------------------------------------------------------------------
# Sec-WebSocket-Extensions syntax (RFC 6455 9.1)
# --------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_LEX = re.compile(rf"[ \t]*(?:({_TOKEN})|({_QUOTED})|([,;=]))[ \t]*")
_IS_TOKEN = re.compile(rf"{_TOKEN}\Z")


def parse_extensions(values) -> list:
    """The extension elements of Sec-WebSocket-Extensions field values:
    ``[(name, [(param, value or None), ...]), ...]``, names lowercased,
    quoted values unquoted.  Raises ValueError on invalid syntax (empty list
    elements are ignored, as RFC 9110 5.6.1 asks of recipients)."""
    out = []
    for value in values:
        tokens = []
        pos, end = 0, len(value)
        while pos < end:
            m = _LEX.match(value, pos)
            if m is None:
                raise ValueError(f"invalid Sec-WebSocket-Extensions at {pos}: {value!r}")
            tokens.append(m.groups())
            pos = m.end()
        i, n = 0, len(tokens)
        while i < n:
            tok, quoted, sep = tokens[i]
            if sep == ",":
                i += 1
                continue
            if tok is None:
                raise ValueError(f"expected an extension name in {value!r}")
            name, params = tok.lower(), []
            i += 1
            while i < n and tokens[i][2] == ";":
                i += 1
                if i >= n or tokens[i][0] is None:
                    raise ValueError(f"expected a parameter name in {value!r}")
                pname, pvalue = tokens[i][0].lower(), None
                i += 1
                if i < n and tokens[i][2] == "=":
                    i += 1
                    if i >= n or tokens[i][2] is not None:
                        raise ValueError(f"expected a parameter value in {value!r}")
                    pvalue = tokens[i][0]
                    if pvalue is None:
                        pvalue = re.sub(r"\\(.)", r"\1", tokens[i][1][1:-1])
                        # RFC 6455 9.1: an unquoted value must be a token.
                        if not _IS_TOKEN.match(pvalue):
                            raise ValueError(f"quoted value {pvalue!r} is not a token in {value!r}")
                    i += 1
                params.append((pname, pvalue))
            if i < n and tokens[i][2] != ",":
                raise ValueError(f"expected ',' or ';' in {value!r}")
            out.append((name, params))
    return out


def _check_params(params, response: bool):
    """A permessage-deflate element's parameters as a dict, or None if they
    break RFC 7692 7.1: unknown or repeated names, a value on a flag, a
    missing or invalid window size (a response must give one; an offer's
    client_max_window_bits may have none)."""
    seen = {}
    for name, value in params:
        if name not in _PARAMS or name in seen:
            return None
        if name.endswith("no_context_takeover"):
            if value is not None:
                return None
        elif value is None:
            if name == "server_max_window_bits" or response:
                return None
        elif not _BITS.match(value):
            return None
        seen[name] = int(value) if value is not None and name.endswith("bits") else value
    return seen


# --------------------------------------------------------------------------
# Negotiated parameters (shared by every connection with the same ones)
# --------------------------------------------------------------------------


class DeflateParams:
    """What one side does after negotiation (local = this side's messages).

    ``local_bits`` 0 means this side never compresses (the peer asked for a
    window of 8, which zlib cannot produce for raw deflate).
    """

    __slots__ = ("local_bits", "remote_bits", "local_no_context", "remote_no_context",
                 "mem_level", "level", "threshold", "limit", "step", "shared_key", "response")

    def __init__(self, opts, local_bits, remote_bits, local_no_context, remote_no_context, response=None):
        self.local_bits = local_bits if local_bits >= 9 else 0
        self.remote_bits = max(remote_bits, 9)  # a larger inflate window is always safe
        self.local_no_context = local_no_context
        self.remote_no_context = remote_no_context
        self.mem_level = opts.deflate_mem_level
        self.level = opts.deflate_level
        self.threshold = opts.compression_threshold
        self.limit = 0 if opts.max_size is None else opts.max_size + 1  # over max_size
        self.step = 0 if opts.max_size is None else max(65536, self.limit >> 4)  # decompress(max_length)
        # Frames compressed without context under the same settings are the same
        # bytes for every connection: the compress-once cache key.
        self.shared_key = (self.local_bits, self.mem_level, self.level) \
            if local_no_context and self.local_bits else None
        self.response = response  # the server's Sec-WebSocket-Extensions value

    def __repr__(self):
        return (f"DeflateParams(local_bits={self.local_bits}, remote_bits={self.remote_bits}, "
                f"local_no_context={self.local_no_context}, remote_no_context={self.remote_no_context})")


# The server's DeflateParams, shared by its connections (a handful of variants).
_interned: dict = {}


def negotiate(values, opts):
    """Server side: ``DeflateParams`` (with ``.response``, the header value to
    answer) for the first acceptable offer among the Sec-WebSocket-Extensions
    ``values``, or None.  Raises ValueError if the header is not valid syntax."""
    for name, params in parse_extensions(values):
        if name != EXTENSION:
            continue
        offer = _check_params(params, response=False)
        if offer is None:
            continue  # RFC 7692 5: decline this offer, try the next
        parts = [EXTENSION]
        # 7.1.1.1: the server may always honour server_no_context_takeover.
        local_nc = opts.server_no_context_takeover or "server_no_context_takeover" in offer
        if local_nc:
            parts.append("server_no_context_takeover")
        # 7.1.1.2: the server may always ask the client for no context
        # takeover; when the client offers it, saying yes lets the server
        # drop its inflater between messages.
        remote_nc = opts.client_no_context_takeover or "client_no_context_takeover" in offer
        if remote_nc:
            parts.append("client_no_context_takeover")
        # 7.1.2.1: a requested server window is a limit the response repeats.
        local_bits = opts.server_max_window_bits
        requested = offer.get("server_max_window_bits")
        if requested is not None:
            local_bits = min(local_bits, requested)
        if requested is not None or local_bits < 15:
            parts.append(f"server_max_window_bits={local_bits}")
        # 7.1.2.2: the client's window may be limited only if it offered
        # client_max_window_bits (with a value: at most that value).
        remote_bits = 15
        if "client_max_window_bits" in offer:
            hint = offer["client_max_window_bits"] or 15
            remote_bits = min(opts.client_max_window_bits, hint)
            if remote_bits < 15 or offer["client_max_window_bits"] is not None:
                parts.append(f"client_max_window_bits={remote_bits}")
        # With the options, the response determines every parameter.
        response = "; ".join(parts)
        params = _interned.get((opts, response))
        if params is None:
            if len(_interned) >= 256:
                _interned.clear()
            params = _interned[(opts, response)] = DeflateParams(
                opts, local_bits, remote_bits, local_nc, remote_nc, response)
        return params
    return None


def client_options(**options) -> Options:
    """The ``Options`` of a client connection: the server's defaults except
    for permessage-deflate, which is on (like browsers) with the offer real
    servers answer correctly, ``permessage-deflate; client_max_window_bits``
    (the server may pick the client's window; the server's is its own):
    both window options default to 15 here, where 15 means "not asked".
    Smaller values are memory-saving offers a server may decline."""
    options.setdefault("compression", "deflate")
    options.setdefault("server_max_window_bits", 15)
    options.setdefault("client_max_window_bits", 15)
    return Options(**options)


def client_offer(opts) -> str:
    """The client's Sec-WebSocket-Extensions value: one permessage-deflate
    offer from its options (``client_max_window_bits`` always, so that the
    server may limit the client's window, as browsers do)."""
    parts = [EXTENSION]
    if opts.server_no_context_takeover:
        parts.append("server_no_context_takeover")
    if opts.client_no_context_takeover:
        parts.append("client_no_context_takeover")
    if opts.server_max_window_bits < 15:
        parts.append(f"server_max_window_bits={opts.server_max_window_bits}")
    if opts.client_max_window_bits < 15:
        parts.append(f"client_max_window_bits={opts.client_max_window_bits}")
    else:
        parts.append("client_max_window_bits")
    return "; ".join(parts)


def client_accept(values, opts):
    """Client side: the DeflateParams the server's response selects (None if it
    selected no extension).  Raises ValueError when the response breaks RFC
    7692 against our offer (the handshake then fails)."""
    elements = parse_extensions(values)
    if not elements:
        return None
    if len(elements) != 1 or elements[0][0] != EXTENSION:
        raise ValueError("the server selected an extension that was not offered")
    got = _check_params(elements[0][1], response=True)
    if got is None:
        raise ValueError(f"invalid permessage-deflate response parameters: {values!r}")
    # 7.1.1.1 / 7.1.2.1: what the client asked of the server must be granted.
    if opts.server_no_context_takeover and "server_no_context_takeover" not in got:
        raise ValueError("the server did not accept server_no_context_takeover")
    remote_bits = got.get("server_max_window_bits", 15)
    if opts.server_max_window_bits < 15:
        if "server_max_window_bits" not in got:
            raise ValueError("the server did not accept server_max_window_bits")
        if remote_bits > opts.server_max_window_bits:
            raise ValueError("the server's server_max_window_bits is above the offer")
    local_bits = opts.client_max_window_bits
    if "client_max_window_bits" in got:
        if got["client_max_window_bits"] > local_bits and opts.client_max_window_bits < 15:
            raise ValueError("the server's client_max_window_bits is above the offer")
        local_bits = min(local_bits, got["client_max_window_bits"])
    local_nc = opts.client_no_context_takeover or "client_no_context_takeover" in got
    remote_nc = "server_no_context_takeover" in got
    return DeflateParams(opts, local_bits, remote_bits, local_nc, remote_nc)


# --------------------------------------------------------------------------
# Per connection
# --------------------------------------------------------------------------

_local = threading.local()  # shared no-context compressors of this thread


def _shared_compressor(params):
    shared = getattr(_local, "compressors", None)
    if shared is None:
        shared = _local.compressors = {}
    c = shared.get(params.shared_key)
    if c is None:
        c = shared[params.shared_key] = zlib.compressobj(
            params.level, zlib.DEFLATED, -params.local_bits, params.mem_level)
    return c


def compress(params, data: bytes, c=None) -> bytes:
    """The compressed payload of one message (tail removed, RFC 7692 7.2.1)
    under ``params``: with the connection's compressor ``c`` (context
    takeover: Z_SYNC_FLUSH), or the thread's shared one (no context
    takeover: Z_FULL_FLUSH resets it after the message)."""
    if c is None:
        c = _shared_compressor(params)
        out = c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)
    else:
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    if out.endswith(TAIL):
        return out[:-4]
    return out  # pragma: no cover - zlib always ends a flush with the tail


def _inflate(d, data, params, chunks: list, total: int) -> int:
    """Feed ``data`` to the decompressor ``d``, appending output to chunks;
    returns the total output so far (MessageTooBig once over max_size)."""
    limit, step = params.limit, params.step
    while True:
        piece = d.decompress(data, step)
        if piece:
            total += len(piece)
            if limit and total >= limit:
                raise MessageTooBig(f"message too big (over {limit - 1} bytes once inflated)")
            chunks.append(piece)
        data = d.unconsumed_tail
        # A full piece may leave output pending in zlib even with no input left.
        if d.eof or not data and (not step or len(piece) < step):
            return total


class PerMessageDeflate:
    """The compression state of one connection (``conn._deflate``)."""

    __slots__ = ("params", "_inflater", "_deflater")

    def __init__(self, params: DeflateParams):
        self.params = params
        self._inflater = None
        self._deflater = None

    def inflate(self, data: bytes) -> bytes:
        """One compressed message (all its frames' payloads) -> its bytes;
        called by the frame parser.  Enforces max_size while inflating: the
        output grows by at most ``step`` (max_size/16, at least 64 KiB) at a
        time, so a bomb stops after max_size + step bytes of output."""
        params = self.params
        d = self._inflater
        if d is None:
            d = self._inflater = zlib.decompressobj(-params.remote_bits)
        limit, step = params.limit, params.step
        try:
            # One call for the usual message; the loop only for large output.
            out = d.decompress(data + TAIL, step)
            # (step and limit are both 0 without max_size, both set with it)
            if step and (len(out) >= limit or len(out) >= step or d.unconsumed_tail):
                if len(out) >= limit:
                    raise MessageTooBig(f"message too big (over {limit - 1} bytes once inflated)")
                chunks = [out]
                _inflate(d, d.unconsumed_tail, params, chunks, len(out))
                out = b"".join(chunks)
        except zlib.error:
            self._inflater = None
            raise ProtocolError("invalid compressed data", 1007) from None
        except MessageTooBig:
            self._inflater = None
            raise
        if params.remote_no_context or d.eof:
            # No context to keep (or the peer ended its deflate stream with
            # BFINAL): the next message gets a fresh inflater.
            self._inflater = None
        return out

    def compress(self, data) -> bytes | None:
        """The compressed payload for ``data`` (str or bytes-like), or None to
        send it uncompressed (below the threshold, or compression disabled)."""
        params = self.params
        if len(data) < params.threshold or not params.local_bits:
            return None
        if type(data) is str:
            data = data.encode("utf-8")
        c = self._deflater
        if c is None:
            if params.local_no_context:
                return compress(params, data)
            c = self._deflater = zlib.compressobj(
                params.level, zlib.DEFLATED, -params.local_bits, params.mem_level)
        out = c.compress(data) + c.flush(_SYNC)
        return out[:-4]  # RFC 7692 7.2.1: a sync flush ends with 0x00 0x00 0xff 0xff

    def release(self) -> None:
        """The connection is idle: drop what holds no context."""
        if self.params.remote_no_context:
            self._inflater = None
        if self.params.local_no_context:
            self._deflater = None
