"""The ``fastws`` command (also ``python -m fastws``).

    fastws echo --host 127.0.0.1 --port 8765

Bad options give one error line and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from ._impl import IMPLEMENTATION
from .exceptions import ConfigError

__all__ = ["main"]


def _size(text: str) -> int:
    """A byte count: 1048576, 1MiB, 64KiB, 16M, 0/none for no limit."""
    t = text.strip().lower().replace("_", "")
    if t in ("none", "0", "unlimited"):
        return 0
    for suffix, mult in (("kib", 1024), ("mib", 2**20), ("gib", 2**30), ("k", 1024), ("m", 2**20), ("g", 2**30)):
        if t.endswith(suffix):
            t, factor = t[: -len(suffix)], mult
            break
    else:
        factor = 1
    try:
        value = int(float(t) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"size must be >= 0: {text!r}")
    return value


def _seconds_or_none(text: str):
    if text.strip().lower() in ("none", "off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"fastws: error: {message}\n")


def _env(name, default):
    return os.environ.get(f"FASTWS_{name.upper().replace('-', '_')}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastws", description="fastws: a WebSocket server for very many connections.")
    parser.add_argument("--version", action="version",
                        version=f"fastws {__version__} ({IMPLEMENTATION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    echo = sub.add_parser("echo", help="run the echo server: every message is sent back",
                          description="Run the echo server: every text or binary message is sent back.")
    echo.add_argument("--host", default=_env("host", "127.0.0.1"),
                      help="address to bind (env FASTWS_HOST; default %(default)s)")
    echo.add_argument("--port", type=int, default=int(_env("port", "8765")),
                      help="port to bind, 0 for any (env FASTWS_PORT; default %(default)s)")
    echo.add_argument("--max-size", type=_size, default=_size(_env("max_size", "1MiB")),
                      help="largest message accepted, e.g. 16MiB; 0 = no limit "
                           "(env FASTWS_MAX_SIZE; default 1MiB); larger ones close with 1009")
    echo.add_argument("--api", choices=("listener", "handler"), default=_env("api", "listener"),
                      help="which API level serves: the low-level listener (default) or the "
                           "async def handler(ws) API")
    echo.add_argument("--ping-interval", type=_seconds_or_none, default=_seconds_or_none(_env("ping_interval", "20")),
                      help="seconds of silence before a keepalive ping; 'none' disables (default 20)")
    echo.add_argument("--ping-timeout", type=float, default=float(_env("ping_timeout", "20")),
                      help="seconds to wait for the pong before closing with 1011 (default 20)")
    echo.add_argument("--workers", type=int, default=int(_env("workers", "1")),
                      help="worker processes sharing the port with SO_REUSEPORT, each with its own "
                           "event loop; a supervisor restarts any that dies (env FASTWS_WORKERS; default 1)")
    echo.add_argument("--log-level", default=_env("log_level", "info"),
                      choices=("critical", "error", "warning", "info", "debug"),
                      help="logging level (env FASTWS_LOG_LEVEL; default %(default)s)")
    echo.add_argument("--access-log", action="store_true",
                      help="log one line per handshake (address, path, status, duration)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        logging.getLogger("fastws.access").setLevel(logging.WARNING)
    from .apps import EchoListener, echo_handler
    from .runner import run

    app = EchoListener if args.api == "listener" else echo_handler

    def on_start(addresses, workers, loop):
        print(f"fastws {__version__} echo listening on ws://{', ws://'.join(addresses)} "
              f"(workers {workers}, implementation {IMPLEMENTATION}, loop {loop}, api {args.api})",
              flush=True)

    try:
        return run(app, args.host, args.port, workers=args.workers, on_start=on_start,
                   max_size=args.max_size or None, ping_interval=args.ping_interval,
                   ping_timeout=args.ping_timeout)
    except ConfigError as exc:
        print(f"fastws: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fastws: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
