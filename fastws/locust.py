"""The public path of the locust integration: ``from fastws.locust import
WebSocketUser`` (one connection per user) or ``PoolUser`` (many per user).
The code is fastws/integrations/locust.py; see docs/guide/locust.md."""
from .integrations.locust import PoolConnection, PoolUser, WebSocketUser, WSStats

__all__ = ["WebSocketUser", "PoolUser", "PoolConnection", "WSStats"]
