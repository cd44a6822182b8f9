# cython: language_level=3
"""The per-message methods of a connection, in C.

The Cython build of fastws/_py/conn.py (same names, same behaviour; that
module is the readable reference and says what each function does). They are
installed as methods of fastws.protocol.Connection / transport.StreamConnection
/ websocket.WebSocketMixin, so ``data_received`` and ``send`` cost no Python
frame per message (~800 instructions each, callgrind).

They read the connection's fields at the fixed offsets of Connection's
``__slots__`` (learned once by :func:`conn_bind` from its member descriptors, as
fastws_ext.fanout does), instead of an attribute lookup each; any object that
is not an instance of the bound class gets a TypeError, never a wild read.
"""
from cpython.ref cimport PyObject, PyTypeObject
from cpython.object cimport PyObject_TypeCheck
from cpython.unicode cimport PyUnicode_Check

from fastws_ext.frames cimport FrameParser, server_frame
from fastws_ext.slots cimport member_offset, slot_at

__all__ = ["conn_bind", "conn_data_received", "conn_send", "ws_send"]

from types import MemberDescriptorType

cdef object _OPEN = 1            # fastws.protocol.OPEN (a small int: a singleton)
cdef object _TRUE = True
cdef int OP_TEXT = 1
cdef int OP_BINARY = 2

cdef type _cls = None            # the bound class (Connection)
cdef Py_ssize_t _off_parser = -1
cdef Py_ssize_t _off_state = -1
cdef Py_ssize_t _off_write = -1
cdef Py_ssize_t _off_is_client = -1
cdef Py_ssize_t _off_paused = -1
cdef Py_ssize_t _large = 16384   # fastws.protocol.LARGE_PAYLOAD
cdef object _done = None         # fastws_ext.aio.DONE


cdef Py_ssize_t _offset(type cls, str name) except -1:
    descr = cls.__dict__.get(name)
    cdef Py_ssize_t offset = member_offset(descr) if type(descr) is MemberDescriptorType else -1
    if offset < 0:
        raise TypeError(f"{cls.__name__}.{name} is not a __slots__ field")
    return offset


def conn_bind(type cls, Py_ssize_t large_payload, done):
    """Learn where ``cls`` (fastws.protocol.Connection) keeps its fields."""
    global _cls, _off_parser, _off_state, _off_write, _off_is_client, _off_paused, _large, _done
    _off_parser = _offset(cls, "_parser")
    _off_state = _offset(cls, "_state")
    _off_write = _offset(cls, "_write")
    _off_is_client = _offset(cls, "_is_client")
    _off_paused = _offset(cls, "_paused_writing")
    _large = large_payload
    _done = done
    _cls = cls


cdef inline int _check(object self) except -1:
    if _cls is None or not PyObject_TypeCheck(self, <PyTypeObject*>_cls):
        raise TypeError(f"expected a bound fastws connection, got {type(self).__name__}")
    return 0


def conn_data_received(self, data):
    """Bytes from the peer: one call into the frame parser (see the twin)."""
    _check(self)
    cdef PyObject* p = slot_at(self, _off_parser)
    if p == NULL or p == <PyObject*>None:
        self._data_without_parser(data)
        return
    parser = <object>p
    try:
        if type(parser) is FrameParser:
            (<FrameParser>parser).feed_object(data)
        else:
            parser.feed(data)
    except Exception as exc:
        self._input_failed(exc)


cdef inline int _frame_out(object self, object data) except -1:
    """1 if sent here (an unmasked frame through _write), 0 if the caller
    must take the general path (client side, or a large payload)."""
    cdef int opcode
    cdef Py_ssize_t n
    cdef PyObject* w
    if slot_at(self, _off_is_client) == <PyObject*>_TRUE:
        return 0
    if PyUnicode_Check(data):
        opcode = OP_TEXT
    else:
        opcode = OP_BINARY
    n = len(data)
    if n >= _large:
        return 0
    frame = server_frame(opcode, data)
    w = slot_at(self, _off_write)
    if w == NULL:
        raise RuntimeError("no transport")
    (<object>w)(frame)
    return 1


def conn_send(self, data):
    """Send one message: ``str`` as text, bytes-like as binary.

    Never blocks and never drops: the frame is queued on the transport.
    Returns False when the write buffer is above ``write_limit`` (wait for
    ``on_drain`` before sending more); raises ConnectionClosed once the
    connection is closing or closed.
    """
    _check(self)
    if slot_at(self, _off_state) != <PyObject*>_OPEN:
        raise self._closed_error()
    if not _frame_out(self, data):
        self._send_general(data)
    if slot_at(self, _off_paused) == <PyObject*>_TRUE:
        return self._check_write_buffer()
    return True


def ws_send(self, data):
    """Send a message (``str``: text, bytes-like: binary). Use it as
    ``await ws.send(data)``: it waits only while the write buffer is above
    ``write_limit``.

    The frame is written at once; when no waiting is needed, the awaitable
    returned is an already-done one (no coroutine per message).
    """
    _check(self)
    if slot_at(self, _off_state) != <PyObject*>_OPEN:
        raise self._closed_error()
    if not _frame_out(self, data):
        self._send_general(data)
    if slot_at(self, _off_paused) == <PyObject*>_TRUE:
        self._check_write_buffer()  # cuts off a peer over max_write_buffer
        return self._drain()
    return _done
