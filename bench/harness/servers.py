"""Echo servers for bench/echo.py, one per process.

    python bench/servers.py NAME --port P [--host H] [--max-size N]

Every server echoes every text and binary message, accepts messages of at
least --max-size bytes (default 16 MiB), answers pings, completes the close
handshake, and runs on uvloop so that only the WebSocket layer differs.

Exit status 3 means "this server cannot run here" (an import failed); the
reason is the last line on stderr. bench/echo.py turns that into a note.

NAMEs: picows, picows-afn, websockets, aiohttp, fastws-listener,
fastws-handler, bare-uvloop; fastws-listener-rate / fastws-handler-rate
(rate_limit on) and fastws-listener-limits / fastws-handler-limits
(rate_limit and rate_limit_bytes on), both far above any bench's traffic, so
that every message is counted and none refused: the cost of the limiter.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

SKIP = 3  # exit status: the server's library is missing or incomplete
BACKLOG = 2048  # the 1,000-connection bench opens connections in batches


def skip(name: str, exc: BaseException) -> None:
    print(f"SKIP {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    sys.exit(SKIP)


def say_ready(host: str, port: int) -> None:
    # echo.py waits for the port to accept; this line only helps a human.
    print(f"READY {host}:{port}", flush=True)


# --------------------------------------------------------------- picows ----
def picows_echo():
    """(the picows echo listener class, ws_create_server); exit SKIP without picows.
    Also the picows peer of bench/load/conn_peers.py."""
    try:
        from picows import WSListener, WSMsgType, ws_create_server
    except ImportError as exc:
        skip("picows", exc)

    CLOSE = WSMsgType.CLOSE
    PING = WSMsgType.PING
    PONG = WSMsgType.PONG

    class Echo(WSListener):
        # Echoes frame by frame: a CONTINUATION frame is sent back as a
        # CONTINUATION frame with the same FIN bit, so a fragmented message
        # comes back fragmented the same way and stays a valid message.
        def on_ws_frame(self, transport, frame):
            msg_type = frame.msg_type
            if msg_type is CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif msg_type is PING or msg_type is PONG:
                pass  # PINGs are answered by picows itself (enable_auto_pong)
            else:
                transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)

    return Echo, ws_create_server


async def run_picows(host: str, port: int, max_size: int, aiofastnet: bool) -> None:
    Echo, ws_create_server = picows_echo()
    kwargs = {}
    if not aiofastnet:
        kwargs["use_aiofastnet"] = False  # plain uvloop transports, like the others
    else:
        try:
            import aiofastnet  # noqa: F401
        except ImportError as exc:
            skip("picows-afn", exc)
        kwargs["use_aiofastnet"] = True
    server = await ws_create_server(
        lambda request: Echo(), host, port,
        max_frame_size=max_size, enable_auto_pong=True, backlog=BACKLOG, **kwargs,
    )
    say_ready(host, port)
    async with server:
        await server.serve_forever()


# ----------------------------------------------------------- websockets ----
async def serve_websockets(host: str, port: int, **options) -> None:
    """A websockets echo server with these serve() options (also conn_peers's peer)."""
    try:
        from websockets.asyncio.server import serve
    except ImportError as exc:
        skip("websockets", exc)

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, host, port, backlog=BACKLOG, **options) as server:
        say_ready(host, port)
        await server.serve_forever()


async def run_websockets(host: str, port: int, max_size: int) -> None:
    # ping_interval=None: no keepalive pings in the middle of a timed window.
    await serve_websockets(host, port, compression=None, max_size=None, ping_interval=None)


# -------------------------------------------------------------- aiohttp ----
def aiohttp_echo(**response_options):
    """An aiohttp handler echoing text and binary on WebSocketResponse(**response_options)."""
    try:
        from aiohttp import WSMsgType, web
    except ImportError as exc:
        skip("aiohttp", exc)

    TEXT = WSMsgType.TEXT
    BINARY = WSMsgType.BINARY

    async def echo(request):
        ws = web.WebSocketResponse(**response_options)
        await ws.prepare(request)
        async for msg in ws:  # autoping=True answers pings; autoclose handles close
            if msg.type is BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is TEXT:
                await ws.send_str(msg.data)
        return ws

    return echo


async def start_aiohttp(handler, host: str, port: int, **site_options) -> None:
    """An aiohttp app serving handler at /, listening (TCPSite(**site_options))."""
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, **site_options).start()


async def run_aiohttp(host: str, port: int, max_size: int) -> None:
    await start_aiohttp(aiohttp_echo(compress=False, max_msg_size=0), host, port, backlog=BACKLOG)
    say_ready(host, port)
    await asyncio.Event().wait()


# --------------------------------------------------------------- fastws ----
# Far above any bench's traffic: every message is counted, none refused.
RATE_LIMITS = {"": {}, "rate": {"rate_limit": (10**9, 2 * 10**9)},
               "limits": {"rate_limit": (10**9, 2 * 10**9), "rate_limit_bytes": (2**50, 2**51)}}


async def run_fastws(host: str, port: int, max_size: int, api: str, limits: str = "") -> None:
    try:
        import fastws

        serve = fastws.serve
        Listener = fastws.Listener
    except (ImportError, AttributeError) as exc:
        skip(f"fastws-{api}", exc)

    if api == "listener":
        class Echo(Listener):
            def on_message(self, data):
                self.ws.send(data)

        target = Echo
    else:
        async def target(ws):
            async for msg in ws:
                await ws.send(msg)

    try:
        server = await serve(target, host, port, max_size=max_size, backlog=BACKLOG, **RATE_LIMITS[limits])
    except TypeError as exc:  # no backlog keyword (yet)
        if "backlog" not in str(exc):
            raise
        server = await serve(target, host, port, max_size=max_size)
    say_ready(host, port)
    await server.serve_forever()


# ---------------------------------------------------------- bare-uvloop ----
class _RawEcho(asyncio.Protocol):
    """TCP echo, no WebSocket: what the loop and the syscalls alone cost."""

    def connection_made(self, transport):
        self.write = transport.write

    def data_received(self, data):
        self.write(data)


async def run_bare(host: str, port: int, max_size: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RawEcho, host, port, backlog=BACKLOG)
    say_ready(host, port)
    async with server:
        await server.serve_forever()


SERVERS = {
    "picows": lambda h, p, m: run_picows(h, p, m, aiofastnet=False),
    "picows-afn": lambda h, p, m: run_picows(h, p, m, aiofastnet=True),
    "websockets": run_websockets,
    "aiohttp": run_aiohttp,
    "fastws-listener": lambda h, p, m: run_fastws(h, p, m, "listener"),
    "fastws-handler": lambda h, p, m: run_fastws(h, p, m, "handler"),
    "fastws-listener-rate": lambda h, p, m: run_fastws(h, p, m, "listener", "rate"),
    "fastws-handler-rate": lambda h, p, m: run_fastws(h, p, m, "handler", "rate"),
    "fastws-listener-limits": lambda h, p, m: run_fastws(h, p, m, "listener", "limits"),
    "fastws-handler-limits": lambda h, p, m: run_fastws(h, p, m, "handler", "limits"),
    "bare-uvloop": run_bare,
}
RAW = {"bare-uvloop"}  # servers that speak raw TCP, not WebSocket


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=sorted(SERVERS))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-size", type=int, default=16 * 2**20)
    args = ap.parse_args()
    uvloop.run(SERVERS[args.name](args.host, args.port, args.max_size))


if __name__ == "__main__":
    main()
