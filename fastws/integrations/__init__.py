"""fastws inside other tools: ``uvicorn`` (the WebSocket protocol of
``uvicorn --ws``) and ``locust`` (a WebSocket user for load tests). Their
public paths are ``fastws.uvicorn`` and ``fastws.locust``. See
docs/guide/uvicorn.md and docs/guide/locust.md."""
