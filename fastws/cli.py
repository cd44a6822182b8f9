"""The ``fastws`` command (also ``python -m fastws``).

    fastws echo --host 127.0.0.1 --port 8765
    fastws chat --host 127.0.0.1 --port 8080     # a chat room: open http://127.0.0.1:8080/
    fastws push --port 8080 --token SECRET       # POST /publish/<topic> -> WebSocket subscribers

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


def _add_serving(p, default_port: int, max_size: str, max_size_help: str) -> None:
    """The flags every serving command has."""
    p.add_argument("--host", default=_env("host", "127.0.0.1"),
                   help="address to bind (env FASTWS_HOST; default %(default)s)")
    p.add_argument("--port", type=int, default=int(_env("port", str(default_port))),
                   help="port to bind, 0 for any (env FASTWS_PORT; default %(default)s)")
    p.add_argument("--max-size", type=_size, default=_size(_env("max_size", max_size)), help=max_size_help)
    p.add_argument("--ping-interval", type=_seconds_or_none, default=_seconds_or_none(_env("ping_interval", "20")),
                   help="seconds of silence before a keepalive ping; 'none' disables (default 20)")
    p.add_argument("--ping-timeout", type=float, default=float(_env("ping_timeout", "20")),
                   help="seconds to wait for the pong before closing with 1011 (default 20)")
    p.add_argument("--compression", default=_env("compression", "none"), choices=("none", "deflate"),
                   help="permessage-deflate (RFC 7692) for clients that offer it, with the defaults of "
                        "fastws.Options (env FASTWS_COMPRESSION; default %(default)s)")
    p.add_argument("--workers", type=int, default=int(_env("workers", "1")),
                   help="worker processes sharing the port with SO_REUSEPORT, each with its own "
                        "event loop; a supervisor restarts any that dies (env FASTWS_WORKERS; default 1)")
    p.add_argument("--log-level", default=_env("log_level", "info"),
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="logging level (env FASTWS_LOG_LEVEL; default %(default)s)")
    p.add_argument("--access-log", action="store_true",
                   help="log one line per handshake (address, path, status, duration)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastws", description="fastws: a WebSocket server for very many connections.")
    parser.add_argument("--version", action="version",
                        version=f"fastws {__version__} ({IMPLEMENTATION})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    echo = sub.add_parser("echo", help="run the echo server: every message is sent back",
                          description="Run the echo server: every text or binary message is sent back.")
    _add_serving(echo, 8765, "1MiB", "largest message accepted, e.g. 16MiB; 0 = no limit "
                 "(env FASTWS_MAX_SIZE; default 1MiB); larger ones close with 1009")
    echo.add_argument("--api", choices=("listener", "handler"), default=_env("api", "listener"),
                      help="which API level serves: the low-level listener (default) or the "
                           "async def handler(ws) API")

    chat = sub.add_parser("chat", help="run the chat room: a web page at / and its WebSocket at /ws",
                          description="Run the chat room: open http://HOST:PORT/ in a browser, pick a "
                                      "name, talk to everyone in the room. The WebSocket is at /ws; "
                                      "the JSON protocol is in the docstring of fastws/chat.py.")
    _add_serving(chat, 8080, "4KiB", "largest message a client may send (env FASTWS_MAX_SIZE; "
                 "default 4KiB); larger ones close with 1009")

    push = sub.add_parser("push", help="run the push service: POST /publish/<topic> reaches "
                                       "the topic's WebSocket subscribers",
                          description="Run the notification push service: clients subscribe at "
                                      "/ws?topics=a,b (or with JSON subscribe messages); "
                                      "POST /publish/<topic> sends the body to the topic's "
                                      "subscribers; GET /healthz. See fastws/push.py.")
    _add_serving(push, 8080, "1MiB", "largest POST /publish body, at most 1MiB (env "
                 "FASTWS_MAX_SIZE; default 1MiB); larger ones get 413")
    push.add_argument("--token", default=_env("token", None),
                      help="require 'Authorization: Bearer TOKEN' to publish (env FASTWS_TOKEN, "
                           "which keeps it out of the process list); default: no token")
    return parser


def _single_process(command: str, workers: int):
    """chat and push keep their state in one process: refuse --workers > 1."""
    if workers <= 1:  # below 1: run() says what is wrong
        return None
    if command == "chat":
        return ("chat does not support --workers: the room and its user list live in one "
                "process, so users on different workers could not see each other")
    return ("push does not support --workers yet: subscribers live in each worker's memory, so "
            "a POST would reach only the subscribers of the worker that took it (this needs a "
            "shared broker)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "echo":
        refusal = _single_process(args.command, args.workers)
        if refusal is not None:
            print(f"fastws: error: {refusal}", file=sys.stderr)
            return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        logging.getLogger("fastws.access").setLevel(logging.WARNING)
    from .runner import run

    options = dict(workers=args.workers, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
                   compression=None if args.compression == "none" else args.compression)
    if args.command == "echo":
        from .apps import EchoListener, echo_handler

        options.update(app=EchoListener if args.api == "listener" else echo_handler,
                       max_size=args.max_size or None)

        def on_start(addresses, workers, loop):
            print(f"fastws {__version__} echo listening on ws://{', ws://'.join(addresses)} "
                  f"(workers {workers}, implementation {IMPLEMENTATION}, loop {loop}, api {args.api}, "
                  f"compression {args.compression})",
                  flush=True)
    elif args.command == "chat":
        from .chat import chat_app

        options.update(chat_app(), max_size=args.max_size or None)

        def on_start(addresses, workers, loop):
            print(f"fastws {__version__} chat listening on http://{', http://'.join(addresses)} "
                  f"(open it in a browser; WebSocket at /ws) "
                  f"(implementation {IMPLEMENTATION}, loop {loop})", flush=True)
    else:
        from .push import MAX_BODY, push_app

        try:
            service, push_options = push_app(args.token, args.max_size or MAX_BODY)
        except ConfigError as exc:
            print(f"fastws: error: {exc}", file=sys.stderr)
            return 2
        options.update(push_options, on_server=service.attach)

        def on_start(addresses, workers, loop):
            auth = "Bearer token required" if args.token else "no token: anyone who reaches the port may publish"
            print(f"fastws {__version__} push listening on http://{', http://'.join(addresses)} "
                  f"(WebSocket at /ws?topics=a,b; POST /publish/<topic>; {auth}) "
                  f"(implementation {IMPLEMENTATION}, loop {loop})", flush=True)

    try:
        return run(host=args.host, port=args.port, on_start=on_start, **options)
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
