"""What an idle held connection keeps (docs/design/memory.md), on both implementations.

- the request's field lines as their shape's number and the key
  (``codec.pack_lines``), put back byte for byte, with a bounded table;
- no bound method per connection (``transport.write``): sends, keepalive
  pings and publishes go to the transport all the same;
- the fields almost always at their defaults in one side object (``_rare``),
  made only when one of them is set to something else.

The shape table is per process and never emptied, so each check runs in a
fresh interpreter (``_probe``), with ``FASTWS_PURE_PYTHON`` set for the twin.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastws import codec as _codec_mod

ROOT = Path(__file__).resolve().parents[2]


def _probe(impl: str, body: str, prelude: str = "", timeout: float = 60.0):
    """Run ``prelude`` and ``body`` (it sets ``result``) in a new interpreter on ``impl``; its result."""
    if impl == "cython":
        try:
            _codec_mod.load("cython")
        except ImportError as exc:
            if os.environ.get("FASTWS_REQUIRE_EXTENSION") == "1":
                raise
            pytest.skip(f"cython implementation not available: {exc}")
    env = {**os.environ, "FASTWS_PURE_PYTHON": "1" if impl == "python" else "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = "import json\nresult = None\n" + prelude + textwrap.dedent(body) + "\nprint('RESULT', json.dumps(result))\n"
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


IMPLS = ("cython", "python")

# The field lines of a request as a reader keeps them (each after CRLF).
_LINES = """
def lines(key, *extra, key_name=b"Sec-WebSocket-Key"):
    return (b"\\r\\nHost: example.com:8765\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
            + key_name + b": " + key + b"\\r\\nSec-WebSocket-Version: 13" + b"".join(extra))
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_lines_that_differ_only_in_the_key_share_one_shape(impl):
    result = _probe(impl, prelude=_LINES, body="""
        from fastws.codec import pack_lines, unpack_lines, IMPLEMENTATION
        a, b = lines(b"dGhlIHNhbXBsZSBub25jZQ=="), lines(b"AQIDBAUGBwgJCgsMDQ4PEA==")
        c = lines(b"AQIDBAUGBwgJCgsMDQ4PEA==", b"\\r\\nOrigin: http://example.com")
        low = lines(b"x" * 24, key_name=b"sec-websocket-key")
        import sys
        pa, pb, pc, pl = (pack_lines(x) for x in (a, b, c, low))
        result = {"impl": IMPLEMENTATION, "packed": [p if type(p) is int else p.hex() for p in (pa, pb, pc, pl)],
                  "back": [unpack_lines(p) == x for p, x in ((pa, a), (pb, b), (pc, c), (pl, low))],
                  "sizes": [sys.getsizeof(p) for p in (a, pa, pb, pc, pl)]}
    """)
    assert result["impl"] == impl
    pa, pb, pc, pl = result["packed"]
    assert result["back"] == [True] * 4
    # One space and a canonical key: the shape's number above the key's 128 bits.
    key_a, key_b = (int.from_bytes(base64.b64decode(k), "big")
                    for k in ("dGhlIHNhbXBsZSBub25jZQ==", "AQIDBAUGBwgJCgsMDQ4PEA=="))
    assert pa == key_a and pb == key_b and pc == 1 << 128 | key_b  # another line: another shape
    # Not base64: byte 0, the shape's number (2 bytes), then the value as received (with its space).
    assert bytes.fromhex(pl) == b"\0\0\2 " + b"x" * 24  # another name case: another shape
    # A 44-byte int (a 48-byte block) where the bytes form was 61 (64) and the lines 160.
    assert result["sizes"][1] == result["sizes"][3] == 44 < result["sizes"][4] == 61 < result["sizes"][0]


@pytest.mark.parametrize("impl", IMPLS)
def test_only_a_canonical_key_after_one_space_becomes_an_int(impl):
    """The int form holds 16 bytes: it is taken only where base64 gives the
    same 24 characters back (RFC 4648 3.5: padding bits 0), after exactly
    one space; every other value keeps the bytes form. Both round trip."""
    result = _probe(impl, prelude=_LINES, body="""
        from fastws.codec import pack_lines, unpack_lines
        values = [b" dGhlIHNhbXBsZSBub25jZQ==", b" dGhlIHNhbXBsZSBub25jZR==", b" dGhlIHNhbXBsZSBub25jZQ=",
                  b"dGhlIHNhbXBsZSBub25jZQ==", b"  dGhlIHNhbXBsZSBub25jZQ==", b"\\tdGhlIHNhbXBsZSBub25jZQ==",
                  b" dGhlIHNhbXBsZSBub25jZQ== ", b" dGhlIHNhbXBsZSBub2-jZQ==", b" /////////////////////w==",
                  b" AAAAAAAAAAAAAAAAAAAAAA==", b" AAAAAAAAAAAAAAAAAAAAAAA=", b" dGhlIHNhbXBsZSBub25jZQ=A"]
        result = []
        for v in values:
            block = b"\\r\\nHost: a\\r\\nSec-WebSocket-Key:" + v + b"\\r\\nSec-WebSocket-Version: 13"
            packed = pack_lines(block)
            result.append([type(packed).__name__, unpack_lines(packed) == block])
    """)
    assert result == [["int", True], ["bytes", True], ["bytes", True], ["bytes", True], ["bytes", True],
                      ["bytes", True], ["bytes", True], ["bytes", True], ["int", True], ["int", True],
                      ["bytes", True], ["bytes", True]]


@pytest.mark.parametrize("impl", IMPLS)
def test_lines_kept_as_received_when_no_shape_fits(impl):
    """No key line, longer than SHAPE_MAX_LEN, or a new shape once SHAPES_MAX
    are known: the block itself (the shapes known keep packing)."""
    result = _probe(impl, prelude=_LINES, body="""
        from fastws.codec import pack_lines, unpack_lines
        from fastws.codec import load
        import fastws.codec
        mod = __import__("fastws_ext.headpack" if fastws.codec.IMPLEMENTATION == "cython" else "fastws._py.headpack",
                         fromlist=["x"])
        no_key = b"\\r\\nHost: a\\r\\nUpgrade: websocket"
        long = lines(b"k" * 24, b"\\r\\nCookie: " + b"c" * mod.SHAPE_MAX_LEN)
        out = {"no_key": pack_lines(no_key) is no_key, "long": pack_lines(long) is long}
        first = lines(b"k" * 24)
        out["first"] = pack_lines(first)[:3].hex()
        for i in range(mod.SHAPES_MAX + 5):  # every one a new shape (another X-N line)
            block = lines(b"%024d" % i, b"\\r\\nX-N: %d" % i)
            packed = pack_lines(block)
            assert unpack_lines(packed) == block
            if packed is block:
                out.setdefault("full_at", i)
        out["first_again"] = pack_lines(lines(b"q" * 24))[:3].hex()
        out["max"] = mod.SHAPES_MAX
        result = out
    """)
    assert result["no_key"] and result["long"]
    assert result["first"] == result["first_again"] == "000000"  # the table is full; known shapes still pack
    assert result["full_at"] == result["max"] - 1  # "first" took one of SHAPES_MAX


@pytest.mark.parametrize("impl", IMPLS)
def test_prefix_and_suffix_of_the_last_shape_round_trip_whatever_lies_between(impl):
    """A block that starts and ends like the last shape used is cut there,
    even if the middle holds more lines: exact round trip either way."""
    result = _probe(impl, prelude=_LINES, body="""
        from fastws.codec import pack_lines, unpack_lines
        a = lines(b"k" * 24)
        pack_lines(a)
        odd = lines(b"k" * 24 + b"\\r\\nX-Inside: 1\\r\\nSec-WebSocket-Key: again")
        empty = lines(b"")
        result = [unpack_lines(pack_lines(x)) == x for x in (odd, empty, a[:-1], a + b"3")]
    """)
    assert result == [True] * 4


def test_both_implementations_pack_alike():
    body = """
        from fastws.codec import pack_lines
        blocks = [lines(b"%024d" % (i % 3), b"\\r\\nX: %d" % (i % 4)) for i in range(20)]
        blocks += [lines(b"k" * 24, key_name=b"sec-websocket-key"), b"\\r\\nHost: a", b""]
        blocks += [lines(k) for k in (b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZR==", b"////////////////////w==")]
        result = [[type(p).__name__, p if type(p) is int else p.hex()] for p in map(pack_lines, blocks)]
    """
    assert _probe("cython", body, _LINES) == _probe("python", body, _LINES)


# ------------------------------------------------------------------ live connections
_SERVER = """
import asyncio, base64, gc, os, struct, sys, types
import fastws
from fastws.apps import EchoListener

def request(key, extra=""):
    return (f"GET /room HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
            f"Sec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: {key}\\r\\n{extra}\\r\\n").encode()

def masked(opcode, payload):
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\\0\\0\\0\\0" + payload

async def frame(reader):
    b0, b1 = await reader.readexactly(2)
    return b0 & 0x0F, await reader.readexactly(b1 & 0x7F)

async def data_frame(reader):
    while True:  # (keepalive pings on the way are skipped)
        op, payload = await frame(reader)
        if op != 9:
            return op, payload

async def open_ws(port, extra=""):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(request(key, extra))
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer, key

async def until(predicate):
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_an_idle_connection_keeps_no_bound_method_and_no_side_object(impl):
    result = _probe(impl, prelude=_SERVER, body="""
        async def main():
            server = await fastws.serve(EchoListener, "127.0.0.1", 0, ping_interval=0.4, ping_timeout=5)
            socks = [await open_ws(server.port) for _ in range(2)] + [await open_ws(server.port, "X-Extra: 1\\r\\n")]
            await until(lambda: len(server.connections) == 3 and all(c.open for c in server.connections))
            conns = sorted(server.connections, key=lambda c: c.headers["Sec-WebSocket-Key"] != socks[0][2])
            out = {}
            out["rare"] = [c._rare is None for c in conns]
            out["defaults"] = [(c.close_code, c.close_reason, c.sent_close_code, c.subprotocol, c.user,
                                c._held_pong, c._messages_base, c._reading_paused) for c in conns[:1]]
            out["bound"] = [sum(isinstance(r, (types.BuiltinMethodType, types.MethodType))
                                for r in gc.get_referents(c)) for c in conns]
            out["no_dict"] = [not hasattr(c, "__dict__") and not hasattr(c._app, "__dict__") for c in conns]
            # a send (the echo), a keepalive ping and a publish, all through the transport
            reader, writer, key = socks[1]
            writer.write(masked(1, b"hello"))
            out["echo"] = list(await asyncio.wait_for(data_frame(reader), 5))
            out["echo"][1] = out["echo"][1].decode()
            op, payload = await asyncio.wait_for(frame(socks[2][0]), 5)
            out["ping"] = [op, payload.decode()]
            for c in conns:
                c.subscribe("t")
            server.publish("t", "news")
            got = [await asyncio.wait_for(data_frame(s[0]), 5) for s in socks[:1]]
            out["publish"] = [[op, p.decode()] for op, p in got]
            out["rare_after"] = [c._rare is None for c in conns]
            server.close()
            await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    assert result["rare"] == [True, True, True]
    assert result["defaults"] == [[None, "", None, None, None, None, 0, False]]
    assert result["bound"] == [0, 0, 0]
    assert result["no_dict"] == [True, True, True]
    assert result["echo"] == [1, "hello"]
    assert result["ping"] == [9, ""]
    assert result["publish"] == [[1, "news"]]
    assert result["rare_after"] == [True, True, True]  # echo, ping, pong, publish: nothing rare


@pytest.mark.parametrize("impl", IMPLS)
def test_ws_headers_come_back_from_the_packed_form(impl):
    result = _probe(impl, prelude=_SERVER, body="""
        async def main():
            server = await fastws.serve(EchoListener, "127.0.0.1", 0)
            socks = [await open_ws(server.port), await open_ws(server.port),
                     await open_ws(server.port, "Origin: http://a.example\\r\\n")]
            await until(lambda: len(server.connections) == 3)
            conns = list(server.connections)
            packed = {c: c._headers for c in conns}
            by_key = {c.headers["Sec-WebSocket-Key"]: c for c in conns}
            out = {"keys": sorted(by_key) == sorted(s[2] for s in socks),
                   "packed": sorted(type(p).__name__ if type(p) is int else p[:3].hex() for p in packed.values()),
                   "sizes": sorted(sys.getsizeof(p) for p in packed.values()),
                   "items": by_key[socks[2][2]].headers.items(),
                   "path": [c.path for c in conns]}
            server.close()
            await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    assert result["keys"]
    # One shape: the key line is the last, so the Origin line after it is kept
    # as part of the middle (the last shape's prefix and suffix still fit):
    # that middle is not a lone key, so it keeps the bytes form; the other
    # two are ints (the shape's number and the key's 128 bits).
    assert result["packed"] == ["000000", "int", "int"]
    # An int of at most 5 digits (44 B); fewer when the key's leading bits are
    # zero (shape 0, a key under 2**120: 1 in 256 random keys), so not exactly 44.
    ints, packed_bytes = result["sizes"][:2], result["sizes"][2]
    assert all(28 <= n <= 44 for n in ints), ints
    assert packed_bytes == 33 + 28 + len("\r\nOrigin: http://a.example")
    assert [n for n, _ in result["items"]] == ["Host", "Upgrade", "Connection", "Sec-WebSocket-Version",
                                               "Sec-WebSocket-Key", "Origin"]
    assert result["items"][-1] == ["Origin", "http://a.example"]
    assert result["path"] == ["/room"] * 3


@pytest.mark.parametrize("impl", IMPLS)
def test_with_the_access_log_on_an_open_connection_keeps_no_side_object(impl):
    """``_started`` (for the access log's duration) lives in the side object
    while the handshake runs, only when the access log is on; once the 101 is
    logged it goes back to its default and the side object with it
    (``fastws --access-log``, or an application logging fastws.access)."""
    result = _probe(impl, prelude=_SERVER, body="""
        import logging
        lines = []

        class Keep(logging.Handler):
            def emit(self, record):
                lines.append(record.getMessage())

        access = logging.getLogger("fastws.access")
        access.setLevel(logging.INFO)
        access.addHandler(Keep())

        async def main():
            server = await fastws.serve(EchoListener, "127.0.0.1", 0)
            socks = [await open_ws(server.port) for _ in range(3)]
            await until(lambda: len(server.connections) == 3 and len(lines) == 3)
            out = {"rare": [c._rare is None for c in server.connections],
                   "started": [c._started for c in server.connections], "lines": lines[:]}
            server.close()
            await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    assert result["rare"] == [True] * 3 and result["started"] == [None] * 3
    assert all('"GET /room HTTP/1.1" 101 - ' in line and line.endswith("ms") for line in result["lines"])


@pytest.mark.parametrize("impl", IMPLS)
def test_the_side_object_holds_what_is_set(impl):
    """Assigning a default makes no side object; anything else makes it and
    reads back; the close codes of a closed connection are there; the
    message count of dropped parsers is kept only with idle_timeout."""
    result = _probe(impl, prelude=_SERVER, body="""
        async def main():
            out = {}
            for idle in (None, 60):
                server = await fastws.serve(EchoListener, "127.0.0.1", 0, idle_timeout=idle)
                reader, writer, key = await open_ws(server.port)
                reader2, writer2, key2 = await open_ws(server.port)
                await until(lambda: len(server.connections) == 2)
                a, b = sorted(server.connections, key=lambda c: c.headers["Sec-WebSocket-Key"] != key)
                a.user = None
                a.subprotocol = None
                a._reading_paused = False
                made_by_defaults = a._rare is not None
                a.user = {"sub": "x"}
                a.pause_reading()
                a.resume_reading()
                writer2.write(masked(1, b"hi"))
                await data_frame(reader2)
                await until(lambda: b._parser is not None and b._parser.at_rest)
                b._idle_parser()
                out[str(idle)] = {"made_by_defaults": made_by_defaults, "user": a.user,
                                  "rare": a._rare is not None, "paused": a._reading_paused,
                                  "base": b._messages_base, "b_rare": b._rare is not None}
                writer.write(masked(8, b"\\x03\\xe8bye"))
                await until(lambda: a.closed)
                out[str(idle)]["closed"] = [a.close_code, a.close_reason, a.sent_close_code]
                server.close()
                await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    for idle, base in (("None", 0), ("60", 1)):
        r = result[idle]
        assert r["made_by_defaults"] is False
        assert r["user"] == {"sub": "x"} and r["rare"] and r["paused"] is False
        assert r["base"] == base and r["b_rare"] is (base != 0)
        assert r["closed"] == [1000, "bye", 1000]


@pytest.mark.parametrize("impl", IMPLS)
def test_the_flags_are_bools_and_the_object_stays_small(impl):
    """_is_client, _general_send, _pong_hook, _direct_ok and _paused_writing
    read and write as bools on both builds; in the extension they are one
    byte each in C, which keeps a server connection within 224 bytes (a
    pymalloc size class: 16 bytes less than with bints and a slot)."""
    result = _probe(impl, prelude=_SERVER, body="""
        import sys
        async def main():
            server = await fastws.serve(EchoListener, "127.0.0.1", 0)
            reader, writer, key = await open_ws(server.port)
            await until(lambda: len(server.connections) == 1)
            conn = next(iter(server.connections))
            out = {"start": [conn._is_client, conn._general_send, conn._pong_hook, conn._direct_ok,
                             conn._paused_writing],
                   "size": sys.getsizeof(conn), "dict": hasattr(conn, "__dict__")}
            conn._paused_writing = True
            out["set"] = conn._paused_writing
            conn._paused_writing = False
            conn.pause_writing()  # what the transport calls above write_limit
            out["paused"] = conn._paused_writing
            conn.resume_writing()
            out["resumed"] = conn._paused_writing
            server.close()
            await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    # a server connection, the listener's empty on_pong: no hook; uvloop: direct reads possible
    assert result["start"] == [False, False, False, True, False]
    assert result["set"] is True and result["paused"] is True and result["resumed"] is False
    assert not result["dict"]
    if impl == "cython":
        assert result["size"] <= 224, result["size"]


@pytest.mark.parametrize("impl", IMPLS)
def test_open_connections_are_out_of_the_cyclic_gc_and_back_in_once_closed(impl):
    # An open connection is held by server.connections: the extension takes it
    # out of the GC's lists then (codec.gc_untrack: no collection walks it),
    # and puts it back when the server lets it go, so the cycle it is in with
    # its listener (listener.ws, conn._app; here the listener also refers to
    # itself) is collected once closed. Without gc_track at the end the
    # listener would never be freed (its untracked connection's reference
    # counts as from outside).
    result = _probe(impl, prelude=_SERVER, body="""
        import weakref

        class Cyclic(fastws.Listener):
            def on_connect(self, ws):
                super().on_connect(ws)
                self.me = self

        async def main():
            server = await fastws.serve(Cyclic, "127.0.0.1", 0)
            reader, writer, _ = await open_ws(server.port)
            await until(lambda: len(server.connections) == 1)
            conn = next(iter(server.connections))
            listener = weakref.ref(conn._app)
            tracked_open = gc.is_tracked(conn)
            gc.collect()
            kept_open = listener() is not None and listener().ws is conn
            writer.write(masked(8, struct.pack("!H", 1000)))  # close
            op, payload = await data_frame(reader)
            writer.close()
            await until(lambda: not server.connections)
            tracked_closed = gc.is_tracked(conn)
            del conn
            await asyncio.sleep(0)
            gc.collect()
            out = {"tracked_open": tracked_open, "kept_open": kept_open, "close": op,
                   "tracked_closed": tracked_closed, "freed": listener() is None}
            server.close()
            await server.wait_closed(5)
            return out
        result = asyncio.run(main())
    """)
    assert result["tracked_open"] is (impl == "python")
    assert result["kept_open"] and result["close"] == 8
    assert result["tracked_closed"] is True
    assert result["freed"] is True
