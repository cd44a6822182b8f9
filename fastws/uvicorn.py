"""The public path of the uvicorn integration: ``uvicorn --ws
fastws.uvicorn:WebSocketProtocol``. The code is fastws/integrations/uvicorn.py;
see docs/guide/uvicorn.md."""
from .integrations.uvicorn import WebSocketProtocol

__all__ = ["WebSocketProtocol"]
