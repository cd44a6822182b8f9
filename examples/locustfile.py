"""Load-test a WebSocket echo server with locust and fastws.locust.WebSocketUser.

    python -m fastws echo --port 8765 &
    locust -f examples/locustfile.py --host ws://127.0.0.1:8765 \
        --headless -u 200 -r 100 -t 30s --csv out

In the statistics: CONNECT (connect + handshake), REQ "echo" (round trip of a
message to its echo, matched by content), PING (round trip of a PING to its
PONG), SEND + RECV "send/recv" (a message written, then read back: the RECV
has the size but no response time, because a bare receive has no latency to
report), CLOSE at the end.
"""
import itertools

from locust import between, task

from fastws.locust import WebSocketUser

_ids = itertools.count()


class EchoUser(WebSocketUser):
    wait_time = between(0.1, 0.5)

    def on_start(self):
        self.n = next(_ids) * 1_000_000
        self.connect("/")

    @task(5)
    def echo(self):
        # A unique payload, so the reply that matches it is this request's.
        self.n += 1
        payload = f"user message {self.n}"
        self.request(payload, match=payload, name="echo")

    @task(1)
    def send_recv(self):
        self.send(b"\x00" * 1024, name="send/recv")
        self.recv(name="send/recv")

    @task(1)
    def heartbeat(self):  # (a task named "ping" would hide WebSocketUser.ping)
        self.ping()
