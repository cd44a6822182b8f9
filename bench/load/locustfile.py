"""Locust scenarios for fastws (and any other WebSocket echo / chat server).

Pick the scenario by its user class (locust runs the classes named on the
command line):

``HoldUser`` (capacity)
    Connect, then hold the connection: answer the server's PINGs and send a
    PING every ``FASTWS_HOLD_PING`` seconds (default 30; 0 = never), each
    reported as PING with its round trip.  Loopback connections are spread over
    127.0.0.2 ... 127.0.0.65 (``FASTWS_LOCUST_SOURCES``).  This is what
    bench/load/locust_million.py runs.
``PoolHoldUser`` (capacity, cheap)
    ``HoldUser``'s scenario with ``FASTWS_POOL_CONNECTIONS`` connections
    (default 1,000) per locust user, one greenlet each (fastws.locust.PoolUser):
    the default of bench/load/locust_million.py.
``EchoUser`` (round trip)
    ``FASTWS_ECHO_SIZE`` bytes (default 64) sent and matched with their echo
    every ``FASTWS_ECHO_WAIT`` seconds (default 1): REQ "echo" is the round trip.
``ChatUser`` (fan-out latency, against ``fastws chat``)
    Logs in to the room at /ws, then every ``FASTWS_CHAT_WAIT`` seconds (default
    5) sends a message whose text is its send time; every user receives every
    message (the server fans it out) and reports RECV "chat fanout" with the
    delay from the sender's send to its own receipt.  Joins and leaves are
    RECV "chat join/leave" (no latency).

Examples::

    python -m fastws echo --port 8765 --workers 2 &
    locust -f bench/load/locustfile.py EchoUser --host ws://127.0.0.1:8765 \\
        --headless -u 1000 -r 200 -t 60s --csv /tmp/echo

    python -m fastws chat --port 8080 &
    locust -f bench/load/locustfile.py ChatUser --host ws://127.0.0.1:8080 \\
        --headless -u 300 -r 100 -t 60s --csv /tmp/chat

    python bench/load/locust_million.py --users 100000 ...   (HoldUser, many workers)
"""
import itertools
import json
import os
import time

import gevent
import locust.runners
from locust import constant, constant_pacing, task

from fastws.locust import PoolUser, WebSocketUser

_ids = itertools.count()

# A worker opening thousands of connections on a busy machine can miss
# locust's 3-second heartbeat deadline; the master then marks it "missing" and
# hands its users to the other workers, which pushes them past the per-process
# file limit.  Allow FASTWS_LOCUST_LIVENESS missed heartbeats (default 60).
locust.runners.HEARTBEAT_LIVENESS = int(os.environ.get("FASTWS_LOCUST_LIVENESS", "60"))


class HoldUser(WebSocketUser):
    wait_time = constant(0)
    ping_interval = float(os.environ.get("FASTWS_HOLD_PING", "30"))
    connect_timeout = float(os.environ.get("FASTWS_CONNECT_TIMEOUT", "10"))

    def on_start(self):
        self.connect(os.environ.get("FASTWS_PATH", "/"))

    @task
    def hold_connection(self):
        self.hold(None, ping_interval=self.ping_interval or None)


class EchoUser(WebSocketUser):
    wait_time = constant_pacing(float(os.environ.get("FASTWS_ECHO_WAIT", "1")))
    size = int(os.environ.get("FASTWS_ECHO_SIZE", "64"))

    def on_start(self):
        self.uid = next(_ids)
        self.n = 0
        self.connect(os.environ.get("FASTWS_PATH", "/"))

    @task
    def echo(self):
        self.n += 1
        head = f"{self.uid}:{self.n}:"
        payload = head + "x" * max(0, self.size - len(head))
        self.request(payload, match=payload, name="echo")


class ChatUser(WebSocketUser):
    wait_time = constant_pacing(float(os.environ.get("FASTWS_CHAT_WAIT", "5")))
    receive_loop = True  # broadcasts arrive at any time

    def on_start(self):
        self.connect(os.environ.get("FASTWS_PATH", "/ws"))
        name = f"u{os.getpid() % 100000}-{next(_ids)}"
        self.request(json.dumps({"type": "login", "name": name}),
                     match=lambda m: '"welcome"' in m or '"error"' in m, name="chat login")

    @task
    def say(self):
        self.send(json.dumps({"type": "message", "text": f"{time.time():.6f}"}), name="chat send")

    def on_message(self, message):
        now = time.time()
        try:
            event = json.loads(message)
        except ValueError:
            self.report_receive(message, name="chat other")
            return
        kind = event.get("type")
        if kind == "message":
            try:
                sent = float(event["text"])
            except (KeyError, ValueError):
                self.report_receive(message, name="chat other")
                return
            self.report_receive(message, latency=max(0.0, now - sent), name="chat fanout")
        elif kind in ("join", "leave"):
            self.report_receive(message, name="chat join/leave")
        else:
            self.report_receive(message, name=f"chat {kind}")


# bench/load/locust_million.py --stagger: the workers open in waves, each
# worker starting when the worker FASTWS_WAVE_AFTER has finished opening (every
# one of its connects answered: a 101 or a failure, one CONNECT event each),
# which it says with the file FASTWS_WAVE_DIR/<its FASTWS_WAVE_ID>.  A wave
# that the server answers slowly delays the next instead of piling up.
_WAVE_DIR = os.environ.get("FASTWS_WAVE_DIR", "")
_wave = {"connects": 0, "watching": False}


def _count_connect(request_type, **_kw):
    if request_type == "CONNECT":
        _wave["connects"] += 1


def _wave_start(user) -> None:
    """Wait for this worker's turn; the first user also watches for its end."""
    after = os.environ.get("FASTWS_WAVE_AFTER", "")
    if not _wave["watching"]:
        _wave["watching"] = True
        user.environment.events.request.add_listener(_count_connect)
        gevent.spawn(_wave_watch, user.environment.runner, user.connections)
    if after:
        while not os.path.exists(os.path.join(_WAVE_DIR, after)):
            gevent.sleep(0.5)


def _wave_watch(runner, per_user: int) -> None:
    while _wave["connects"] < runner.user_count * per_user or not runner.user_count:
        gevent.sleep(0.5)
    with open(os.path.join(_WAVE_DIR, os.environ["FASTWS_WAVE_ID"]), "w") as f:
        f.write(str(_wave["connects"]))


class PoolHoldUser(PoolUser):
    """``HoldUser``'s scenario for ``FASTWS_POOL_CONNECTIONS`` connections
    (default 1,000) per user, all driven by the user's one greenlet: connect,
    answer the server's PINGs, PING each connection every ``FASTWS_HOLD_PING``
    seconds (0: never)."""

    connections = int(os.environ.get("FASTWS_POOL_CONNECTIONS", "1000"))
    ping_interval = float(os.environ.get("FASTWS_HOLD_PING", "30")) or None
    connect_timeout = float(os.environ.get("FASTWS_CONNECT_TIMEOUT", "10"))
    path = os.environ.get("FASTWS_PATH", "/")
    # bench/load/locust_million.py --max-connecting: handshakes in flight per
    # user, so that all users together never queue more than the server can
    # answer within the connect timeout (the opening waits for the server).
    max_connecting = int(os.environ.get("FASTWS_MAX_CONNECTING", "100"))

    def on_start(self):
        if _WAVE_DIR:
            _wave_start(self)
