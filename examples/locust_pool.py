"""Hold many WebSocket connections against your server with locust and fastws.locust.PoolUser.

Copy this file, then (N connections = users x connections per user):

    locust -f locust_pool.py --host ws://127.0.0.1:8765 --headless -u 20 -r 20 -t 5m --csv out
    FASTWS_POOL_CONNECTIONS=500 locust -f locust_pool.py ...      # 500 per user instead of 1000

Each user is one greenlet holding ``connections`` WebSocket connections: it
opens them (at most ``FASTWS_CONNECT_RATE`` per second per locust process when
set), answers the server's pings and sends a PING on each every
``ping_interval`` seconds.  In the statistics: CONNECT (TCP connect + validated
101, per connection), PING (round trip), CLOSE at the end (the closing
handshake); ``message_interval`` below makes each connection also send a
message whose echo is reported as RECV with its latency.  Open connections,
their peak and close codes are in the web UI's "WebSocket connections" tab,
in ``out_ws.csv`` and in ``--ws-stats-file``.  More than ~20,000 connections:
run several locust worker processes (``--processes`` or ``--worker``), each
under its open-file limit, and give each its own source addresses, one per
~25,000 connections (``FASTWS_LOCUST_OWN_SOURCES=10.0.2.11,10.0.2.12``; on
loopback 127.0.0.2, 127.0.0.3, ...): the pool then binds their ports itself,
in order, instead of the kernel's port search that stalls as addresses shared
by many processes fill (docs/deployment/million.md).
"""
import os

from fastws.locust import PoolUser


class HoldConnections(PoolUser):
    path = os.environ.get("FASTWS_PATH", "/")
    connections = int(os.environ.get("FASTWS_POOL_CONNECTIONS", "1000"))  # per user
    ping_interval = float(os.environ.get("FASTWS_HOLD_PING", "30")) or None  # client PINGs, s
    message_interval = float(os.environ.get("FASTWS_MESSAGE_INTERVAL", "0")) or None  # echo round trips, s
