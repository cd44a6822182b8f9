"""fastws_ext: the Cython hot path of fastws.

One module per concern, joined by .pxd declarations:

- mask:   XOR (un)masking, in place, word at a time, with a running key offset
- utf8:   incremental UTF-8 validation (fail fast on the first invalid byte)
- frames: the incremental RFC 6455 frame parser and the frame builder
- wheel:  the hashed timer wheel that drives heartbeats and timeouts
- fanout: encode-once publish/broadcast: one frame written to many connections
- upgrade: the checks of the server's handshake short cut (handshake.UpgradeReader)
- core, aio: the keepalive core of a connection; the handler API's inbox

Do not import these modules directly: ``fastws.codec`` picks them or their
twins in ``fastws._py``. See docs/design/codec.md.
"""
