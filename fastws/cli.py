"""The ``fastws`` command (also ``python -m fastws``).

    fastws run myapp:handler --port 8765        # your async handler(ws) or Listener class
    fastws echo --host 127.0.0.1 --port 8765
    fastws chat --port 8080                     # a chat room: open http://127.0.0.1:8080/
    fastws push --port 8080 --token SECRET      # POST /publish/<topic> -> WebSocket subscribers

Every flag can also come from a ``FASTWS_`` environment variable (a flag on
the command line wins). Bad options, a missing certificate or an app that
does not import give one error line and exit status 2, never a traceback.
See docs/guide/cli.md.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys

from .codec import IMPLEMENTATION
from .exceptions import ConfigError
from .ratelimit import parse_rate
from .server import is_handler
from .version import __version__

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


def _rate(text: str):
    """--rate-limit: '100/s', '100/s:500', '1MiB/s', 'none' -> (rate, burst) or None."""
    if text.strip().lower() in ("", "none", "off", "0"):
        return None
    try:
        return parse_rate(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _per_second(text: str):
    """--limit-handshakes-per-ip: 'N', 'N/s', 'N/min', 'none' -> per second or None."""
    rate = _rate(text)
    return None if rate is None else rate[0]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"fastws: error: {message}\n")


def _env(name, default):
    return os.environ.get(f"FASTWS_{name.upper().replace('-', '_')}", default)


def _int_at_least(low: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return convert


def _int_or_none(text: str):
    if text.strip().lower() in ("", "none", "0", "off"):
        return None
    return _int_at_least(1)(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text!r}")
    return value


def _flag(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


_LEVELS = ("critical", "error", "warning", "info", "debug")


def _add_serving(p, default_port: int, max_size: str, max_size_help: str) -> None:
    """The flags every serving command has. Defaults are strings so that a bad
    FASTWS_ environment value is reported by argparse like a bad flag."""
    p.add_argument("--host", default=_env("host", "127.0.0.1"),
                   help="address to bind (env FASTWS_HOST; default %(default)s)")
    p.add_argument("--port", type=_int_at_least(0), default=_env("port", str(default_port)),
                   help="port to bind, 0 for any (env FASTWS_PORT; default %(default)s)")
    p.add_argument("--uds", default=_env("uds", None), metavar="PATH",
                   help="bind a Unix domain socket at PATH instead of host:port (env FASTWS_UDS)")
    p.add_argument("--backlog", type=_int_at_least(1), default=_env("backlog", "2048"),
                   help="listen() backlog: connections waiting to be accepted (env FASTWS_BACKLOG; "
                        "default %(default)s)")
    p.add_argument("--compression", default=_env("compression", "none"), choices=("none", "deflate"),
                   help="permessage-deflate (RFC 7692) for clients that offer it, with the defaults of "
                        "fastws.Options (env FASTWS_COMPRESSION; default %(default)s)")
    p.add_argument("--workers", type=_int_at_least(1), default=_env("workers", "1"),
                   help="worker processes sharing the port with SO_REUSEPORT, each with its own "
                        "event loop; a supervisor restarts any that dies (env FASTWS_WORKERS; default 1)")
    p.add_argument("--ssl-certfile", default=_env("ssl_certfile", None), metavar="PEM",
                   help="serve wss:// (TLS) with this certificate chain (env FASTWS_SSL_CERTFILE)")
    p.add_argument("--ssl-keyfile", default=_env("ssl_keyfile", None), metavar="PEM",
                   help="the private key of --ssl-certfile, if not in the same file (env FASTWS_SSL_KEYFILE)")
    p.add_argument("--max-size", type=_size, default=_env("max_size", max_size), help=max_size_help)
    p.add_argument("--ping-interval", type=_seconds_or_none, default=_env("ping_interval", "20"),
                   help="seconds of silence before a keepalive ping; 'none' disables "
                        "(env FASTWS_PING_INTERVAL; default 20)")
    p.add_argument("--ping-timeout", type=float, default=_env("ping_timeout", "20"),
                   help="seconds to wait for the pong before closing with 1011 "
                        "(env FASTWS_PING_TIMEOUT; default 20)")
    p.add_argument("--origins", default=_env("origins", None), metavar="LIST",
                   help="comma-separated Origin values allowed to connect, e.g. "
                        "'https://example.com,https://www.example.com'; others get 403; "
                        "'none' in the list admits clients that send no Origin (non-browser); "
                        "'*' any origin (env FASTWS_ORIGINS; default: any origin, but chat and "
                        "push admit only their own origin and clients without one, and the "
                        "list adds to it)")
    p.add_argument("--allowed-hosts", default=_env("allowed_hosts", None), metavar="LIST",
                   help="comma-separated Host names this server answers, like Django's "
                        "ALLOWED_HOSTS: 'example.com', '.example.com' (it and its subdomains), "
                        "'*.example.com' (subdomains), '[::1]', '*'; ports are ignored; "
                        "requests with another Host get 400, which stops DNS rebinding "
                        "(env FASTWS_ALLOWED_HOSTS; default: any host)")
    p.add_argument("--limit-connections", type=_int_or_none, default=_env("limit_connections", "none"),
                   metavar="N", help="at most N open WebSockets per worker: further upgrades get "
                                     "503 with Retry-After (env FASTWS_LIMIT_CONNECTIONS; default: no limit)")
    p.add_argument("--rate-limit", type=_rate, default=_env("rate_limit", "none"), metavar="RATE",
                   help="messages per second each connection may send, e.g. 100/s (burst twice the "
                        "rate) or 100/s:500 (burst 500); over it the connection is closed with 1008 "
                        "(env FASTWS_RATE_LIMIT; default: off)")
    p.add_argument("--rate-limit-bytes", type=_rate, default=_env("rate_limit_bytes", "none"), metavar="RATE",
                   help="message bytes per second each connection may send, e.g. 1MiB/s or "
                        "1MiB/s:8MiB; over it 1008 (env FASTWS_RATE_LIMIT_BYTES; default: off)")
    p.add_argument("--limit-connections-per-ip", type=_int_or_none,
                   default=_env("limit_connections_per_ip", "none"), metavar="N",
                   help="at most N open WebSockets per client address: further upgrades get 429 "
                        "with Retry-After (env FASTWS_LIMIT_CONNECTIONS_PER_IP; default: no limit)")
    p.add_argument("--limit-handshakes-per-ip", type=_per_second,
                   default=_env("limit_handshakes_per_ip", "none"), metavar="N/s",
                   help="at most N upgrades per second per client address (a burst of N): more get "
                        "429 with Retry-After (env FASTWS_LIMIT_HANDSHAKES_PER_IP; default: no limit)")
    p.add_argument("--forwarded-allow-ips", default=_env("forwarded_allow_ips", "127.0.0.1"), metavar="LIST",
                   help="comma-separated proxy addresses or CIDRs ('*': any, 'unix:': Unix socket "
                        "peers) whose Forwarded / X-Forwarded-For give the client address for the "
                        "per-IP limits, and whose PROXY headers are believed with --proxy-protocol (env FASTWS_FORWARDED_ALLOW_IPS; default %(default)s)")
    p.add_argument("--proxy-protocol", type=_flag, nargs="?", const=True, default=_env("proxy_protocol", "0"),
                   metavar="BOOL",
                   help="connections from --forwarded-allow-ips must begin with a PROXY protocol "
                        "header (v1 or v2, as HAProxy send-proxy and AWS NLB send it), whose client "
                        "address is then the connection's; other peers are closed "
                        "(env FASTWS_PROXY_PROTOCOL=1; default off)")
    p.add_argument("--jwt-secret", default=_env("jwt_secret", ""), metavar="SECRET",
                   help="accept only upgrades that carry a JWT signed with this HS256 secret (32+ bytes); "
                        "401 with WWW-Authenticate otherwise (env FASTWS_JWT_SECRET; default: no check; "
                        "docs/guide/jwt.md)")
    p.add_argument("--jwt-public-key", default=_env("jwt_public_key", ""), metavar="PEM",
                   help="... or with the RSA/EC key in this PEM file (RS256/ES256) (env FASTWS_JWT_PUBLIC_KEY)")
    p.add_argument("--jwt-jwks-url", default=_env("jwt_jwks_url", ""), metavar="URL",
                   help="... or with a key of this JWKS, fetched and cached, refetched on an unknown kid "
                        "(env FASTWS_JWT_JWKS_URL)")
    p.add_argument("--jwt-audience", default=_env("jwt_audience", ""), metavar="LIST",
                   help="the token's aud must name one of these (env FASTWS_JWT_AUDIENCE)")
    p.add_argument("--jwt-issuer", default=_env("jwt_issuer", ""), metavar="ISS",
                   help="the token's iss must be this (env FASTWS_JWT_ISSUER)")
    p.add_argument("--timeout-graceful-shutdown", type=_seconds, metavar="SECONDS",
                   default=_env("timeout_graceful_shutdown", "10"),
                   help="on SIGTERM/SIGINT: send 1001 to every client and wait this long for the "
                        "closing handshakes, then abort (env FASTWS_TIMEOUT_GRACEFUL_SHUTDOWN; default 10)")
    p.add_argument("--log-level", default=_env("log_level", "info"), choices=_LEVELS,
                   help="logging level of the fastws.* loggers (env FASTWS_LOG_LEVEL; default %(default)s)")
    p.add_argument("--access-log", type=_flag, nargs="?", const=True, default=_env("access_log", "0"),
                   metavar="BOOL",
                   help="log one line per handshake on the fastws.access logger: address, "
                        "request, status, subprotocol, duration (env FASTWS_ACCESS_LOG=1)")
    p.add_argument("--no-metrics", dest="metrics", action="store_false",
                   default=not _flag(_env("no_metrics", "0")),
                   help="do not answer GET /metrics (env FASTWS_NO_METRICS=1); GET /healthz stays")


def version_line() -> str:
    """What ``fastws --version`` prints: the version, which codec, which Python."""
    python = ".".join(str(part) for part in sys.version_info[:3])
    return f"fastws {__version__} (implementation {IMPLEMENTATION}, Python {python})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastws", description="fastws: a WebSocket server for very many connections.")
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser(
        "run", help="serve your app: module:handler (async def handler(ws)) or module:Listener",
        description="Serve an app found by import string, like uvicorn: 'package.module:attr' is an "
                    "async def handler(ws) (high-level API) or a fastws.Listener subclass (low-level "
                    "API), imported from the current directory. 'echo', 'chat' and 'push' run the "
                    "built-in apps. GET /healthz and GET /metrics are answered on the same port.")
    run.add_argument("app", metavar="APP", help="module:attribute, or echo / chat / push")
    _add_serving(run, 8765, "1MiB", "largest message accepted, e.g. 16MiB; 0 = no limit "
                 "(env FASTWS_MAX_SIZE; default 1MiB); larger ones close with 1009")
    run.add_argument("--subprotocols", default=_env("subprotocols", None), metavar="LIST",
                     help="comma-separated subprotocols the app speaks, in order of preference "
                          "(env FASTWS_SUBPROTOCOLS)")
    run.add_argument("--api", choices=("listener", "handler"), default=_env("api", "listener"),
                     help="echo only: which API level serves")
    run.add_argument("--token", default=_env("token", None),
                     help="push only: require 'Authorization: Bearer TOKEN' to publish (env FASTWS_TOKEN)")

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
    _add_serving(chat, 8080, "32KiB", "largest message a client may send (env FASTWS_MAX_SIZE; "
                 "default 32KiB, the longest text with every character JSON-escaped); larger "
                 "ones close with 1009")

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
    push.add_argument("--redis", default=_env("redis", None), metavar="URL",
                      help="share topics through Redis (redis://host:port/db) or a Redis Cluster "
                           "(redis+cluster://host:port,host:port: seed nodes; sharded pub/sub): every worker, "
                           "on any machine using it, delivers every publish; allows --workers > 1 "
                           "(env FASTWS_REDIS; needs pip install 'fastws[redis]')")
    push.add_argument("--wait-replicas", type=int, default=int(_env("wait_replicas", "0")), metavar="N",
                      help="with --redis: answer a publish only once N replicas have it (Redis WAIT), so a "
                           "failover cannot lose it; 504 if they do not confirm within 1 s "
                           "(env FASTWS_WAIT_REPLICAS; default 0: do not wait)")
    push.add_argument("--history", type=int, default=int(_env("history", "0")), metavar="N",
                      help="with --redis: keep about the last N messages of each topic in a Redis "
                           "stream, so clients can resume with ?since=ID (env FASTWS_HISTORY; default 0: off)")
    push.add_argument("--presence", action="store_true", default=_flag(_env("presence", "0")),
                      help="serve GET /presence/<topic> (behind --token) and join/leave events for "
                           "subscribers that ask ({\"type\": \"subscribe\", ..., \"presence\": true}); with "
                           "--redis across every process, members kept in Redis (env FASTWS_PRESENCE)")
    push.add_argument("--presence-ttl", type=_seconds, default=_env("presence_ttl", "30"), metavar="S",
                      help="with --redis --presence: a crashed process's members vanish within S seconds; "
                           "each process refreshes its own every S/3 (env FASTWS_PRESENCE_TTL; default 30)")
    push.add_argument("--refresh-grace", type=_seconds, default=_env("refresh_grace", "30"),
                      metavar="S",
                      help="with --jwt-*: when a subscriber's token expires it is sent {\"type\": \"refresh\"} "
                           "and closed with 4001 unless it sends a new token within S seconds "
                           "(env FASTWS_REFRESH_GRACE; default 30)")
    return parser


def _single_process(command: str, workers: int, redis=None):
    """chat and push keep their state in one process: refuse --workers > 1
    (push: unless a Redis broker shares the topics)."""
    if workers <= 1 or (command == "push" and redis):  # below 1: run() says what is wrong
        return None
    if command == "chat":
        return ("chat does not support --workers: the room and its user list live in one "
                "process, so users on different workers could not see each other")
    return ("push needs --redis URL for --workers > 1: subscribers live in each worker's memory, "
            "so without a shared broker a POST would reach only the subscribers of the worker that took it")


BUILTINS = ("echo", "chat", "push")


def _error(message: str) -> int:
    print(f"fastws: error: {message}", file=sys.stderr)
    return 2


def import_app(spec: str):
    """``package.module:attr.sub`` -> the object (uvicorn's import-string rule).

    Raises ConfigError with a one-line message on any failure."""
    module_name, sep, attrs = spec.partition(":")
    if not sep or not module_name or not attrs:
        raise ConfigError(f"app must be 'module:attribute' (or one of {', '.join(BUILTINS)}), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"cannot import {module_name!r}: no module named {exc.name!r} "
                              f"(run from the directory that contains it)") from None
        raise ConfigError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        where = ""
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith(module_name.replace(".", os.sep) + ".py"):
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        raise ConfigError(f"importing {module_name!r} failed{where}: {type(exc).__name__}: {exc}") from None
    obj = module
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attrs!r}") from None
    if inspect.isfunction(obj) and not inspect.iscoroutinefunction(obj):
        required = [p for p in inspect.signature(obj).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if required:  # a zero-argument function is a listener factory
            raise ConfigError(f"{spec} is a plain function: write 'async def {obj.__name__}(ws)' "
                              f"(or give a fastws.Listener subclass)")
    elif not callable(obj):
        raise ConfigError(f"{spec} is a {type(obj).__name__}, not an async handler or a Listener class")
    return obj


def _jwt_auth(args, **options):
    """The JWTAuth of the --jwt-* flags, or None when no key source is given;
    ``options``: other JWTAuth arguments."""
    flags = dict(jwt_secret=args.jwt_secret, jwt_public_key=args.jwt_public_key,
                 jwt_jwks_url=args.jwt_jwks_url, jwt_audience=args.jwt_audience, jwt_issuer=args.jwt_issuer)
    if not any(flags.values()):
        return None
    try:
        from .auth import JWTAuth
    except ImportError as exc:
        raise ConfigError(f"the --jwt-* flags need PyJWT (pip install 'fastws[auth]'): {exc}") from None
    return JWTAuth.from_options(**flags, **options)


def _ssl_context(certfile, keyfile):
    if certfile is None:
        if keyfile is not None:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        return None
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise ConfigError(f"TLS certificate or key not found: {exc.filename or certfile}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {certfile!r}"
                          f"{' and key ' + repr(keyfile) if keyfile else ''}: {exc}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _list(text):
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command
    if command == "run" and args.app in BUILTINS:
        command = args.app
    if args.log_level not in _LEVELS:  # from FASTWS_LOG_LEVEL: argparse checks only flags
        return _error(f"invalid log level {args.log_level!r} (FASTWS_LOG_LEVEL): choose from {', '.join(_LEVELS)}")
    if command in ("chat", "push"):
        refusal = _single_process(command, args.workers, getattr(args, "redis", None))
        if refusal is not None:
            return _error(refusal)
    try:
        ssl_ctx = _ssl_context(args.ssl_certfile, args.ssl_keyfile)
        if ssl_ctx is not None and args.proxy_protocol:
            raise ConfigError("--proxy-protocol with --ssl-certfile: terminate TLS at the proxy and "
                              "serve plain ws:// behind it (docs/deployment/proxies.md)")
        app = import_app(args.app) if command == "run" else None
        # push: a ?topics= the token does not allow is an error message on the
        # open connection (the app's), not a 403 at the handshake
        authenticate = _jwt_auth(args, **({"topics_param": None} if command == "push" else {}))
    except ConfigError as exc:
        return _error(str(exc))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.access_log:
        logging.getLogger("fastws.access").setLevel(logging.WARNING)
    from .runner import run

    options = dict(workers=args.workers, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
                   backlog=args.backlog, graceful_timeout=args.timeout_graceful_shutdown,
                   metrics=args.metrics, health=True, limit_connections=args.limit_connections,
                   compression=None if args.compression == "none" else args.compression,
                   rate_limit=args.rate_limit, rate_limit_bytes=args.rate_limit_bytes,
                   limit_connections_per_ip=args.limit_connections_per_ip,
                   limit_handshakes_per_ip=args.limit_handshakes_per_ip,
                   forwarded_allow_ips=_list(args.forwarded_allow_ips) or [],
                   proxy_protocol=args.proxy_protocol)
    if args.uds:
        options["unix_path"] = args.uds
    if ssl_ctx is not None:
        options["ssl"] = ssl_ctx
    origins = _list(args.origins)
    if origins is not None:
        origins = [None if o.lower() == "none" else o for o in origins]
        if command not in ("chat", "push") and "*" not in origins:
            options["origins"] = origins  # chat and push apply it themselves (same origin + list)
    allowed_hosts = _list(args.allowed_hosts)
    if allowed_hosts is not None:
        options["allowed_hosts"] = allowed_hosts
    if authenticate is not None:
        options["authenticate"] = authenticate
    ws, http = ("wss", "https") if ssl_ctx is not None else ("ws", "http")

    def where(addresses, scheme):
        if args.uds:
            return f"unix:{args.uds}"
        return ", ".join(f"{scheme}://{a}" for a in addresses)

    def facts(workers, loop):
        return f"(workers {workers}, implementation {IMPLEMENTATION}, loop {loop})"

    if command == "run":
        options.update(app=app, max_size=args.max_size or None, subprotocols=_list(args.subprotocols))

        def on_start(addresses, workers, loop):
            kind = "handler" if is_handler(app) else "listener"
            print(f"fastws {__version__} serving {args.app} ({kind}) on {where(addresses, ws)} "
                  f"{facts(workers, loop)}", flush=True)
    elif command == "echo":
        from .apps import EchoListener, echo_handler

        api = getattr(args, "api", "listener")
        options.update(app=EchoListener if api == "listener" else echo_handler,
                       max_size=args.max_size or None)

        def on_start(addresses, workers, loop):
            print(f"fastws {__version__} echo listening on {where(addresses, ws)} "
                  f"(workers {workers}, implementation {IMPLEMENTATION}, loop {loop}, api {api}, "
                  f"compression {args.compression})",
                  flush=True)
    elif command == "chat":
        from .apps.chat import chat_app

        options.update(chat_app(origins=origins), max_size=args.max_size or None)

        def on_start(addresses, workers, loop):
            print(f"fastws {__version__} chat listening on {where(addresses, http)} "
                  f"(open it in a browser; WebSocket at /ws) "
                  f"{facts(workers, loop)}", flush=True)
    else:
        from .apps.push import MAX_BODY, push_app

        token = getattr(args, "token", None)
        try:
            service, push_options = push_app(token, args.max_size or MAX_BODY, origins=origins,
                                             auth=authenticate,
                                             refresh_grace=getattr(args, "refresh_grace", 30.0),
                                             presence=getattr(args, "presence", False))
        except ConfigError as exc:
            return _error(str(exc))
        options.update(push_options, on_server=service.attach)
        redis = getattr(args, "redis", None)
        history = getattr(args, "history", 0)
        if history and not redis:
            return _error("--history needs --redis URL (the history is kept in Redis)")
        if getattr(args, "wait_replicas", 0) and not redis:
            return _error("--wait-replicas needs --redis URL (replicas of that Redis confirm each publish)")
        if redis:
            from .broker import RedisBroker
            from .apps.push import envelope

            try:
                options["broker"] = RedisBroker(redis, history=history,
                                                wrap=envelope if history else None,
                                                wait_replicas=getattr(args, "wait_replicas", 0),
                                                presence=getattr(args, "presence", False),
                                                presence_ttl=getattr(args, "presence_ttl", 30.0))
            except ConfigError as exc:
                return _error(str(exc))

        def on_start(addresses, workers, loop):
            auth = ("JWT required" if authenticate is not None else "Bearer token required" if token
                    else "no token: anyone who reaches the port may publish")
            broker = (f"; redis {options['broker'].safe_url}, history {history or 'off'}"
                      if redis else "")
            if getattr(args, "presence", False):
                broker += "; GET /presence/<topic>"
            print(f"fastws {__version__} push listening on {where(addresses, http)} "
                  f"(WebSocket at /ws?topics=a,b; POST /publish/<topic>; {auth}{broker}) "
                  f"{facts(workers, loop)}", flush=True)

    try:
        return run(host=args.host, port=args.port, on_start=on_start, **options)
    except ConfigError as exc:
        return _error(str(exc))
    except OSError as exc:
        target = args.uds if args.uds else f"{args.host}:{args.port}"
        return _error(f"cannot listen on {target}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
