"""JWT authentication for the server's ``authenticate=`` hook (issue #15).

``JWTAuth`` finds a bearer token in an upgrade request (``Authorization``, a
query parameter, a cookie, or a ``bearer.<token>`` subprotocol, which
``strip_subprotocols`` removes from the offer), verifies it with PyJWT (HS256
secret, RS256/ES256 PEM public key or JWKS URL, ``JWKSClient``) and returns its
claims; refusals are ``InvalidRequest`` 401/403 with an RFC 6750
``WWW-Authenticate``. ``allowed`` reads topic permissions from claims.
Needs PyJWT (``pip install 'fastws[auth]'``).
See docs/guide/jwt.md.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from functools import lru_cache

from .exceptions import ConfigError, InvalidRequest

try:
    import jwt
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastws.auth needs PyJWT: pip install 'fastws[auth]' "
                      "(PyJWT[crypto] for RS256/ES256)") from _exc

__all__ = [
    "JWTAuth",
    "JWKSClient",
    "allowed",
    "valid_pattern",
    "SOURCES",
    "SUBSCRIBE",
    "PUBLISH",
]

log = logging.getLogger("fastws.auth")

#: Where a token may come from, in the default order of ``JWTAuth(sources=)``.
SOURCES = ("header", "query", "cookie", "subprotocol")
SUBSCRIBE = "subscribe"
PUBLISH = "publish"

# The push app's topic alphabet (fastws/apps/push.py), and patterns over it.
_TOPIC_CHARS = "A-Za-z0-9._:\\-"
_TOPIC = re.compile(f"[{_TOPIC_CHARS}]{{1,128}}")
_PATTERN = re.compile(f"[{_TOPIC_CHARS}*]{{1,128}}")

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_ASYMMETRIC = (*_RSA, *_EC)
_MIN_SECRET = 32      # bytes: RFC 7518 3.2, a key at least as long as the hash
_MIN_RSA_BITS = 2048
# RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*\Z')


# --------------------------------------------------------------------------
# Topic permissions
# --------------------------------------------------------------------------


def valid_pattern(pattern) -> bool:
    """Whether ``pattern`` is a topic pattern: 1-128 characters of the topic
    alphabet (``A-Z a-z 0-9 . _ : -``) and ``*``."""
    return isinstance(pattern, str) and _PATTERN.fullmatch(pattern) is not None


@lru_cache(maxsize=1024)
def _compile(pattern: str):
    """The regex of one pattern: ``*`` is any run (maybe empty) of topic
    characters, dots included, as in fnmatch; everything else is literal."""
    return re.compile("".join(f"[{_TOPIC_CHARS}]*" if part == "*" else re.escape(part)
                              for part in re.split(r"(\*)", pattern)))


def _patterns(value) -> list:
    """The patterns a claim holds: a list of strings, or one string of
    patterns separated by spaces (as an OAuth ``scope``); anything else none."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return [p for p in value if isinstance(p, str)]
    return []


def allowed(claims, topic: str, action: str, *, subscribe_claim: str = "subs",
            publish_claim: str = "pubs") -> bool:
    """Whether ``claims`` (a verified token's) allow ``action``
    (``"subscribe"`` or ``"publish"``) on ``topic``.

    The claim ``subscribe_claim`` (``"subs"``) or ``publish_claim``
    (``"pubs"``) lists patterns; ``*`` matches any run of topic characters
    (``news.*``: ``news.eu``, ``news.eu.fr``; ``*``: every topic). A topic that
    is not valid, a missing claim or an invalid pattern allows nothing: the
    check fails closed. See docs/guide/jwt.md#topic-permissions.
    """
    if action == SUBSCRIBE:
        name = subscribe_claim
    elif action == PUBLISH:
        name = publish_claim
    else:
        raise ValueError(f"action must be {SUBSCRIBE!r} or {PUBLISH!r}, not {action!r}")
    if not isinstance(claims, dict) or not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        return False
    for pattern in _patterns(claims.get(name)):
        if pattern == topic or (valid_pattern(pattern) and "*" in pattern
                                and _compile(pattern).fullmatch(topic)):
            return True
    return False


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


def _crypto():
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
    except ImportError:
        raise ConfigError("RS256/ES256 need the cryptography package: "
                          "pip install 'fastws[auth]' (PyJWT[crypto])") from None
    return ec, rsa


def _key_algorithms(key) -> tuple:
    """The algorithms a public key can verify (RSA: RS*/PS*; EC: the ES* of
    its curve); ConfigError for another key type or a weak RSA key."""
    ec, rsa = _crypto()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ConfigError(f"RSA public key of {key.key_size} bits: at least {_MIN_RSA_BITS} required")
        return _RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        algs = tuple(alg for alg, curve in _EC.items() if key.curve.name == curve)
        if algs:
            return algs
    raise ConfigError(f"unsupported public key type {type(key).__name__}: RSA or EC (P-256, P-384, P-521)")


def _load_public_key(value):
    """A cryptography public key from a key object, PEM text or bytes (a
    public key or a certificate), or the path of a PEM file."""
    _crypto()
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if hasattr(value, "public_numbers"):  # already a public key object
        return value
    if isinstance(value, str) and "-----BEGIN" in value:
        data = value.encode("ascii", "replace")
    elif isinstance(value, (bytes, bytearray)) and b"-----BEGIN" in value:
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        try:
            with open(value, "rb") as f:
                data = f.read(1 << 20)
        except OSError as exc:
            raise ConfigError(f"cannot read the JWT public key {os.fspath(value)!r}: {exc.strerror}") from None
    else:
        raise ConfigError("public_key must be a PEM file path, PEM text or a public key object")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError("the JWT public key is not a PEM public key or certificate "
                          "(a private key is refused: give the public half)") from None


def _compatible(key, alg: str) -> bool:
    """Whether a (JWKS) public key may verify ``alg``."""
    try:
        return alg in _key_algorithms(key)
    except ConfigError:
        return False


# --------------------------------------------------------------------------
# JWKS
# --------------------------------------------------------------------------


class _NoRedirectElsewhere(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _FetchError(Exception):
    """A JWKS fetch failed; the text is for the log, never for a client."""


_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.I)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-store|no-cache)\b", re.I)


class JWKSClient:
    """The keys of a JWKS URL (RFC 7517), fetched and cached for ``JWTAuth``.

    - The key set is cached for the response's ``Cache-Control: max-age``,
      kept within ``[min_ttl, max_ttl]`` (``no-cache``/``no-store``:
      ``min_ttl``); without one, ``cache_ttl`` (300 s).
    - A token whose ``kid`` is not in the set triggers a refetch (key
      rotation), but fetches start at most once per ``refetch_interval``
      seconds, whatever the reason: a flood of random kids, or an identity
      provider that is down, costs one fetch per interval, not one per
      handshake. Concurrent handshakes wait on the one fetch in flight.
    - A fetch taking longer than ``timeout`` seconds, an HTTP error, a body
      over ``max_size`` or that is not a JWKS with a usable key fails: the
      failure is logged once (WARNING on ``fastws.auth``, no traceback) until
      a fetch succeeds again, and the keys already known stay in use at most
      ``max_ttl`` after they were fetched.
    - Only signature keys are used (``use`` absent or ``sig``), RSA or EC;
      symmetric (``oct``) keys and keys with private parts are ignored.

    Fetches run urllib in a thread (proxies from the environment apply), so
    the event loop never blocks. One event loop per client.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, cache_ttl: float = 300.0,
                 min_ttl: float = 60.0, max_ttl: float = 86400.0, refetch_interval: float = 30.0,
                 max_size: int = 1 << 20, clock=time.monotonic):
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https") \
                or not urllib.parse.urlsplit(url).netloc:
            raise ConfigError(f"jwks_url must be an http:// or https:// URL, not {url!r}")
        for name, value in (("timeout", timeout), ("cache_ttl", cache_ttl), ("min_ttl", min_ttl),
                            ("max_ttl", max_ttl), ("refetch_interval", refetch_interval)):
            if not isinstance(value, (int, float)) or value < 0 or (name == "timeout" and value == 0):
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        if not min_ttl <= max_ttl:
            raise ConfigError("min_ttl must not be above max_ttl")
        self.url = url
        self.timeout = float(timeout)
        self.cache_ttl = float(cache_ttl)
        self.min_ttl = float(min_ttl)
        self.max_ttl = float(max_ttl)
        self.refetch_interval = float(refetch_interval)
        self.max_size = int(max_size)
        self._clock = clock
        self._keys = {}        # kid (str, or None for keys without one) -> [(key, jwk alg or None)]
        self._count = 0        # keys in the set
        self._fetched = None   # clock() of the last successful fetch
        self._expires = 0.0    # clock() when the set is to be refreshed
        self._attempt = None   # clock() when the last fetch started
        self._inflight = None  # asyncio.Task of the fetch under way
        self._failing = False  # a failure was logged and no fetch has succeeded since
        self._executor = None
        #: Fetches started (successful or not), for tests and metrics.
        self.fetches = 0

    def __repr__(self) -> str:
        return f"<JWKSClient {self.url} keys={self._count}>"

    # ---------------------------------------------------------------- lookup
    async def get_key(self, kid, alg: str):
        """The public key for a token's ``kid`` (None: the set's only key)
        that can verify ``alg``, fetching the set if it is due; None when
        there is none (or the set could not be fetched)."""
        now = self._clock()
        if self._fetched is None or now >= self._expires:
            await self._refresh()
        key = self._lookup(kid, alg)
        if key is None and self._fetched is not None:
            # Unknown kid: maybe the keys were rotated since the last fetch.
            await self._refresh()
            key = self._lookup(kid, alg)
        return key

    def _lookup(self, kid, alg):
        if self._fetched is not None and self._clock() >= self._fetched + self.max_ttl:
            self._keys, self._count = {}, 0  # too stale to trust: forget them
        if kid is None:
            if self._count != 1:
                return None
            (entries,) = self._keys.values()
        else:
            entries = self._keys.get(kid)
            if not entries:
                return None
        for key, key_alg in entries:
            if (key_alg is None or key_alg == alg) and _compatible(key, alg):
                return key
        return None

    # ---------------------------------------------------------------- fetching
    async def _refresh(self) -> None:
        """Fetch the set unless one was started less than refetch_interval
        ago; wait for the fetch in flight if there is one."""
        task = self._inflight
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(task)
            return
        now = self._clock()
        if self._attempt is not None and now - self._attempt < self.refetch_interval:
            return
        self._attempt = now
        self.fetches += 1
        task = self._inflight = asyncio.ensure_future(self._fetch_and_store())
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def _fetch_and_store(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="fastws-jwks")
            body, cache_control = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._get), self.timeout)
            keys, count = self._parse(body)
        except asyncio.TimeoutError:
            self._failed(f"no answer within {self.timeout:g} s")
        except _FetchError as exc:
            self._failed(str(exc))
        except Exception as exc:  # anything else urllib or the parser raised
            self._failed(f"{type(exc).__name__}: {exc}")
        else:
            now = self._clock()
            self._keys, self._count = keys, count
            self._fetched = now
            self._expires = now + self._ttl(cache_control)
            if self._failing:
                self._failing = False
                log.info("JWKS %s: fetched again (%d keys)", self.url, count)
        finally:
            if self._inflight is asyncio.current_task():
                self._inflight = None

    def _failed(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("JWKS %s: fetch failed: %s; tokens that need a key from it are refused "
                        "(not logged again until a fetch succeeds)", self.url, why)

    def _ttl(self, cache_control) -> float:
        if cache_control:
            if _NO_CACHE.search(cache_control):
                return self.min_ttl
            match = _MAX_AGE.search(cache_control)
            if match:
                return min(max(float(match.group(1)), self.min_ttl), self.max_ttl)
        return min(max(self.cache_ttl, self.min_ttl), self.max_ttl)

    def _get(self):
        """(body, Cache-Control) of a GET of the URL; runs in a thread. Each
        socket operation waits at most ``timeout``, the whole at most about
        twice that (a server trickling bytes is cut off)."""
        deadline = time.monotonic() + self.timeout
        opener = urllib.request.build_opener(_NoRedirectElsewhere)
        request = urllib.request.Request(self.url, headers={
            "Accept": "application/jwk-set+json, application/json", "User-Agent": "fastws"})
        try:
            with opener.open(request, timeout=self.timeout) as response:
                length = response.headers.get("Content-Length", "")
                if length.strip().isdigit() and int(length) > self.max_size:
                    raise _FetchError(f"answer over {self.max_size} bytes (Content-Length {int(length)})")
                chunks, size = [], 0
                while True:
                    if time.monotonic() > deadline:
                        raise _FetchError(f"no complete answer within {self.timeout:g} s")
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_size:
                        raise _FetchError(f"answer over {self.max_size} bytes")
                    chunks.append(chunk)
                return b"".join(chunks), response.headers.get("Cache-Control")
        except urllib.error.HTTPError as exc:
            raise _FetchError(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _FetchError(f"no answer within {self.timeout:g} s") from None
            raise _FetchError(str(exc.reason)) from None
        except TimeoutError:  # a socket operation waited `timeout`
            raise _FetchError(f"no answer within {self.timeout:g} s") from None
        except OSError as exc:  # resets
            raise _FetchError(f"{type(exc).__name__}: {exc}") from None

    def _parse(self, body: bytes):
        """({kid: [(key, alg)]}, count) of a JWKS document's usable keys."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _FetchError("the answer is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise _FetchError('the answer is not a JWK set (no "keys" list)')
        keys, count = {}, 0
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC"):
                continue
            if jwk.get("use", "sig") != "sig" or "d" in jwk:
                continue
            kid, alg = jwk.get("kid"), jwk.get("alg")
            if (kid is not None and not isinstance(kid, str)) or (alg is not None and alg not in _ASYMMETRIC):
                continue
            try:
                key = jwt.PyJWK(jwk).key
                _key_algorithms(key)
            except Exception:  # a malformed or unsupported key: skip it
                continue
            keys.setdefault(kid, []).append((key, alg))
            count += 1
        if not count:
            raise _FetchError("the JWK set holds no usable RSA or EC signature key")
        return keys, count

    def close(self) -> None:
        """Let the fetch thread go (a fetch under way finishes on its own)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


# --------------------------------------------------------------------------
# JWTAuth
# --------------------------------------------------------------------------


class JWTAuth:
    """An ``authenticate=`` hook: ``await auth(request)`` returns the verified
    claims (a dict, which the server keeps as ``ws.user``) or raises
    ``InvalidRequest``.

    Exactly one key source: ``secret`` (HS256; at least 32 bytes),
    ``public_key`` (a PEM file path, PEM text or key object: RS256 for RSA,
    ES256 for P-256) or ``jwks_url``. ``algorithms`` narrows or widens what is
    accepted (default: HS256, the key's own, or RS256 and ES256 for JWKS);
    ``none`` and HMAC with a public key are refused at start-up.

    Claims: ``exp`` (required unless ``require`` says otherwise), ``nbf``,
    ``iat`` (not in the future), ``aud`` (must match ``audience`` when set,
    and a token with ``aud`` is refused without one), ``iss`` (must equal
    ``issuer`` when set); all with ``leeway`` seconds.

    Refusals: no token, 401 with ``WWW-Authenticate: Bearer realm="fastws"``;
    a bad one, 401 with ``error="invalid_token"`` and a short
    ``error_description``; two different tokens in one place, 400
    ``invalid_request``; a valid token whose ``subs`` claim does not allow a
    topic of the ``topics`` query parameter, or that ``authorize`` turns
    down, 403 ``insufficient_scope``. See docs/guide/jwt.md.
    """

    def __init__(self, *, secret=None, public_key=None, jwks_url=None, algorithms=None,
                 audience=None, issuer=None, leeway=0, require=("exp",), sources=SOURCES,
                 query_param: str = "token", cookie: str = "token",
                 subprotocol_prefix: str | None = "bearer.", realm: str = "fastws",
                 subscribe_claim: str = "subs", publish_claim: str = "pubs",
                 topics_param: str | None = "topics", authorize=None,
                 max_token_size: int = 8192, jwks_options=None):
        given = [n for n, v in (("secret", secret), ("public_key", public_key), ("jwks_url", jwks_url))
                 if v is not None]
        if len(given) != 1:
            raise ConfigError("JWTAuth needs exactly one of secret, public_key, jwks_url"
                              + (f" (got {', '.join(given)})" if given else ""))
        self._secret = self._key = self.jwks = None
        if secret is not None:
            if isinstance(secret, str):
                secret = secret.encode("utf-8")
            if not isinstance(secret, (bytes, bytearray)) or len(secret) < _MIN_SECRET:
                raise ConfigError(f"the JWT secret must be at least {_MIN_SECRET} bytes (RFC 7518 3.2)")
            self._secret = bytes(secret)
            possible = _HMAC
            default = ("HS256",)
        elif public_key is not None:
            self._key = _load_public_key(public_key)
            possible = _key_algorithms(self._key)
            default = possible[:1]
        else:
            _crypto()
            self.jwks = JWKSClient(jwks_url, **(jwks_options or {}))
            possible = _ASYMMETRIC
            default = ("RS256", "ES256")
        if algorithms is None:
            algorithms = default
        if isinstance(algorithms, str):
            algorithms = [algorithms]
        algorithms = tuple(algorithms)
        wrong = [a for a in algorithms if a not in possible]
        if not algorithms or wrong:
            raise ConfigError(f"algorithms {', '.join(map(repr, wrong)) or '(none)'} cannot be used with "
                              f"this {given[0]}: choose among {', '.join(possible)}")
        self.algorithms = algorithms

        if isinstance(audience, str):
            audience = [audience]
        if audience is not None:
            audience = list(audience)
            if not audience or not all(isinstance(a, str) and a for a in audience):
                raise ConfigError("audience must be a non-empty string or list of strings")
        self.audience = audience
        if issuer is not None and (not isinstance(issuer, str) or not issuer):
            raise ConfigError("issuer must be a non-empty string")
        self.issuer = issuer
        if isinstance(leeway, datetime.timedelta):
            leeway = leeway.total_seconds()
        if not isinstance(leeway, (int, float)) or leeway < 0:
            raise ConfigError(f"leeway must be a number of seconds >= 0, not {leeway!r}")
        self.leeway = leeway
        if isinstance(require, str):
            require = [require]
        self.require = tuple(require or ())

        if isinstance(sources, str):
            sources = [sources]
        sources = tuple(sources)
        if not sources or len(set(sources)) != len(sources) or any(s not in SOURCES for s in sources):
            raise ConfigError(f"sources must be some of {', '.join(SOURCES)} (each once), not {sources!r}")
        if "subprotocol" in sources and not subprotocol_prefix:
            raise ConfigError("the subprotocol source needs a subprotocol_prefix")
        self.sources = sources
        self.query_param = query_param
        self.cookie = cookie
        if subprotocol_prefix is not None and not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+",
                                                               subprotocol_prefix):
            raise ConfigError(f"subprotocol_prefix must be token characters, not {subprotocol_prefix!r}")
        self.subprotocol_prefix = subprotocol_prefix
        if not isinstance(realm, str) or not _DESCRIPTION.match(realm):
            raise ConfigError(f"realm {realm!r} cannot go in a WWW-Authenticate header")
        self.realm = realm
        self.subscribe_claim = subscribe_claim
        self.publish_claim = publish_claim
        self.topics_param = topics_param
        if authorize is not None and not callable(authorize):
            raise ConfigError("authorize must be callable")
        self.authorize = authorize
        self.max_token_size = int(max_token_size)

    @classmethod
    def from_options(cls, *, jwt_secret=None, jwt_public_key=None, jwt_jwks_url=None,
                     jwt_audience=None, jwt_issuer=None, **options):
        """The JWTAuth of the command's flags ``--jwt-secret``,
        ``--jwt-public-key PEM``, ``--jwt-jwks-url URL``, ``--jwt-audience``
        (a comma-separated list: any of them) and ``--jwt-issuer``; None when
        no key source is given (no authentication). Empty strings count as
        not given (unset environment variables). ``options``: any other
        JWTAuth argument."""
        secret, public_key, jwks_url, audience, issuer = (
            v or None for v in (jwt_secret, jwt_public_key, jwt_jwks_url, jwt_audience, jwt_issuer))
        if secret is None and public_key is None and jwks_url is None:
            if audience is not None or issuer is not None:
                raise ConfigError("--jwt-audience and --jwt-issuer need one of --jwt-secret, "
                                  "--jwt-public-key, --jwt-jwks-url")
            return None
        if isinstance(audience, str):
            audience = [a.strip() for a in audience.split(",") if a.strip()] or None
        return cls(secret=secret, public_key=public_key, jwks_url=jwks_url, audience=audience,
                   issuer=issuer, **options)

    def __repr__(self) -> str:
        source = "secret" if self._secret else "public_key" if self._key is not None else self.jwks.url
        return f"<JWTAuth {source} algorithms={list(self.algorithms)}>"

    # ---------------------------------------------------------------- subprotocols
    def is_token_subprotocol(self, value: str) -> bool:
        """Whether an offered subprotocol value carries a token
        (``bearer.<token>``): the server must never select it."""
        prefix = self.subprotocol_prefix
        return bool(prefix) and isinstance(value, str) and value.startswith(prefix)

    def strip_subprotocols(self, offered) -> list:
        """The offered subprotocols without those that carry a token, in
        order: what the server selects its subprotocol from. ``offered``: a
        list of values, or a ``Sec-WebSocket-Protocol`` field value
        (comma-separated)."""
        if isinstance(offered, str):
            offered = offered.split(",")
        return [p for p in (v.strip() for v in offered) if p and not self.is_token_subprotocol(p)]

    def redact_target(self, target: str) -> str:
        """The request target with the value of the token query parameter
        replaced by ``REDACTED``, for logs."""
        path, sep, query = target.partition("?")
        if not sep or not self.query_param:
            return target
        parts = []
        for item in query.split("&"):
            name = urllib.parse.unquote_plus(item.partition("=")[0])
            parts.append(f"{item.partition('=')[0]}=REDACTED" if name == self.query_param else item)
        return f"{path}?{'&'.join(parts)}"

    # ---------------------------------------------------------------- the hook
    async def __call__(self, request) -> dict:
        """The claims of the request's token; InvalidRequest to refuse it."""
        token = self.find_token(request)
        if token is None:
            raise InvalidRequest(401, "Unauthorized",
                                 [("WWW-Authenticate", f'Bearer realm="{self.realm}"')],
                                 body="Unauthorized: a bearer token is required")
        claims = await self.verify(token)
        await self.check_request(claims, request)
        return claims

    def find_token(self, request):
        """The token of the request from the first of ``sources`` that has
        one, or None; InvalidRequest 400 when one place holds two different
        tokens."""
        for source in self.sources:
            found = getattr(self, f"_from_{source}")(request)
            if found:
                if len(set(found)) > 1:
                    raise self._refusal(400, "invalid_request", f"several tokens in the {source}")
                return found[0]
        return None

    def _from_header(self, request) -> list:
        out = []
        for value in request.headers.get_all("authorization"):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                out.append(token.strip(" \t"))
        return out

    def _from_query(self, request) -> list:
        path = request.path
        if not self.query_param or "?" not in path:
            return []
        query = path.partition("?")[2].partition("#")[0]
        return [v for n, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
                if n == self.query_param]

    def _from_cookie(self, request) -> list:
        out = []
        if not self.cookie:
            return out
        for value in request.headers.get_all("cookie"):
            for item in value.split(";"):
                name, eq, val = item.strip().partition("=")
                if eq and name.strip() == self.cookie:
                    val = val.strip()
                    if len(val) >= 2 and val[0] == val[-1] == '"':
                        val = val[1:-1]
                    out.append(val)
        return out

    def _from_subprotocol(self, request) -> list:
        prefix = self.subprotocol_prefix
        out = []
        for value in request.headers.get_all("sec-websocket-protocol"):
            for item in value.split(","):
                item = item.strip()
                if item.startswith(prefix):
                    out.append(item[len(prefix):])
        return out

    # ---------------------------------------------------------------- verification
    def _refusal(self, status: int, error: str, description: str) -> InvalidRequest:
        assert _DESCRIPTION.match(description), description
        challenge = (f'Bearer realm="{self.realm}", error="{error}", '
                     f'error_description="{description}"')
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}[status]
        return InvalidRequest(status, reason, [("WWW-Authenticate", challenge)],
                              body=f"{reason}: {description}")

    def _invalid(self, description: str) -> InvalidRequest:
        log.debug("token refused: %s", description)
        return self._refusal(401, "invalid_token", description)

    async def verify(self, token) -> dict:
        """The claims of a token (a str), verified; InvalidRequest 401 if it
        is not valid. Usable on its own, e.g. for a token sent in a message."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise self._invalid("malformed token") from None
        if not isinstance(token, str) or not token:
            raise self._invalid("malformed token")
        if len(token) > self.max_token_size:
            raise self._invalid("token too large")
        if token.count(".") != 2 or not token.isascii():
            raise self._invalid("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # DecodeError, and RecursionError for absurd nesting
            raise self._invalid("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise self._invalid("algorithm not allowed")
        if self._secret is not None:
            key = self._secret
        elif self._key is not None:
            key = self._key
        else:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise self._invalid("malformed token")
            key = await self.jwks.get_key(kid, alg)
            if key is None:
                raise self._invalid("unknown signing key")
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": list(self.require)},
            )
        except jwt.ExpiredSignatureError:
            raise self._invalid("token expired") from None
        except jwt.ImmatureSignatureError:
            raise self._invalid("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise self._invalid("invalid audience") from None
        except jwt.InvalidIssuerError:
            raise self._invalid("invalid issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            claim = exc.claim if re.fullmatch(r"[a-z_]{1,32}", str(exc.claim)) else "?"
            raise self._invalid(f"missing claim {claim}") from None
        except jwt.InvalidSignatureError:
            raise self._invalid("invalid signature") from None
        except Exception as exc:  # any other InvalidTokenError, or a key/token mismatch
            log.debug("token refused: %s: %s", type(exc).__name__, exc)
            raise self._refusal(401, "invalid_token", "invalid token") from None
        if not isinstance(claims, dict):
            raise self._invalid("invalid token")
        return claims

    # ---------------------------------------------------------------- permissions
    def allowed(self, claims, topic: str, action: str) -> bool:
        """``fastws.auth.allowed`` with this authenticator's claim names."""
        return allowed(claims, topic, action, subscribe_claim=self.subscribe_claim,
                       publish_claim=self.publish_claim)

    def authorize_topic(self, ws, topic: str, action: str) -> bool:
        """The server's default ``authorize(ws, topic, action)`` hook when
        this is its ``authenticate`` and no ``authorize`` is given: the
        ``subs``/``pubs`` claims of ``ws.user`` decide (``allowed``)."""
        return allowed(ws.user, topic, action, subscribe_claim=self.subscribe_claim,
                       publish_claim=self.publish_claim)

    async def check_request(self, claims: dict, request) -> None:
        """403 unless the claims allow the connection: every topic of the
        ``topics_param`` query parameter (comma-separated, as ``fastws push``
        reads it) allowed for subscribe, and ``authorize(claims, request)``
        (sync or async) true."""
        if self.topics_param and "?" in request.path:
            query = request.path.partition("?")[2].partition("#")[0]
            for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
                if name == self.topics_param:
                    for topic in value.split(","):
                        if topic and not self.allowed(claims, topic, SUBSCRIBE):
                            raise self._refusal(403, "insufficient_scope", "topic not allowed")
        if self.authorize is not None:
            ok = self.authorize(claims, request)
            if asyncio.iscoroutine(ok):
                ok = await ok
            if not ok:
                raise self._refusal(403, "insufficient_scope", "not allowed")

    def close(self) -> None:
        """Release the JWKS fetch thread, if any."""
        if self.jwks is not None:
            self.jwks.close()
