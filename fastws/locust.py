"""The public path of the locust integration: ``from fastws.locust import
WebSocketUser``. The code is fastws/integrations/locust.py; see
docs/guide/locust.md."""
from .integrations.locust import WebSocketUser, WSStats

__all__ = ["WebSocketUser", "WSStats"]
