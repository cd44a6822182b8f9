# cython: language_level=3
"""The keepalive core of a connection: its timer, and bytes in while idle.

The Cython build of fastws/_py/core.py (same names, same behaviour).
``fastws.protocol.Connection`` extends ``ConnectionCore``, which extends the
wheel's ``TimerEntry``: the wheel calls ``on_timer`` here in C and uvloop
calls ``data_received`` here in C, so an idle connection's keepalive cycle
runs no Python frame in the common case; everything rare goes to the Python
methods of ``Connection``. The clocks are C doubles (+inf: not set), and the
subclass's fields and the Options' keepalive settings are ``__slots__`` read
at their offsets (``_Slot``, as fastws_ext/fanout.pyx does).
See docs/design/timers.md#an-idle-connection-runs-no-python.
"""
cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.math cimport INFINITY

from fastws_ext.wheel cimport LoopDriver, TimerEntry

from fastws_ext.frames cimport (FrameParser, lone_opcode, parser_activity, parser_wants_direct,
                                server_frame)
from cpython.unicode cimport PyUnicode_Check

from fastws_ext.constants cimport (CLOSED, CLOSING, CONNECTING, LARGE_PAYLOAD, OP_BINARY, OP_PING,
                                   OP_TEXT, OPEN)

from fastws_ext.frames import build_frame, lone_control
from fastws_ext.aio import DONE

__all__ = ["ConnectionCore", "PING_SERVER", "conn_send", "ws_send"]

# Payloads of LARGE_PAYLOAD bytes or more are written next to their header
# instead of being copied into one frame (server side; client frames are
# masked, which needs a copy anyway).
cdef Py_ssize_t _LARGE = LARGE_PAYLOAD
cdef object _DONE = DONE

cdef double INF = INFINITY

# The server's keepalive ping, built once (a client's carries a fresh mask key
# each time, RFC 6455 5.3).
PING_SERVER = b"\x89\x00"
cdef bytes _PING_SERVER = PING_SERVER


from types import MemberDescriptorType
from fastws_ext.slots cimport member_offset, slot_at


@cython.auto_pickle(False)
@cython.final
cdef class _Slot:
    """One attribute name read (and written) at its ``__slots__`` offset.

    The offset is learnt from the class's member descriptor and cached for
    the last class seen (one class in a process of one server; another class
    costs a re-learn). Anything else (a property, a __dict__ attribute, an
    unset slot) takes the plain getattr/setattr path, with its errors.
    """
    cdef str name
    cdef type cls               # the class the offset belongs to (kept alive)
    cdef Py_ssize_t off         # -1: not a plain object slot of cls

    def __cinit__(self, str name):
        self.name = name
        self.cls = None
        self.off = -1

    cdef int _learn(self, type cls) except -1:
        descr = getattr(cls, self.name, None)
        self.off = member_offset(descr) if type(descr) is MemberDescriptorType else -1
        self.cls = cls
        return 0

    cdef inline object get(self, object obj):
        cdef PyObject* v
        if type(obj) is not self.cls:
            self._learn(type(obj))
        if self.off >= 0:
            v = slot_at(obj, self.off)
            if v != NULL:
                return <object>v
        return getattr(obj, self.name)

    cdef inline PyObject* member(self, object obj):
        """The value of the slot (borrowed), or NULL when ``obj``'s class has
        no such slot (a method or a property of that name, or nothing) or it
        is not set."""
        if type(obj) is not self.cls:
            self._learn(type(obj))
        if self.off < 0:
            return NULL
        return slot_at(obj, self.off)

    cdef inline int set(self, object obj, object value) except -1:
        cdef PyObject** at
        cdef PyObject* old
        if type(obj) is not self.cls:
            self._learn(type(obj))
        if self.off < 0:
            setattr(obj, self.name, value)
            return 0
        at = <PyObject**>((<char*><PyObject*>obj) + self.off)
        old = at[0]
        Py_INCREF(value)
        at[0] = <PyObject*>value
        Py_XDECREF(old)
        return 0


@cython.auto_pickle(False)
@cython.final
cdef class _Defaults:
    """The ``_slot_defaults`` of one class, as slot offsets and values: what
    ``ConnectionCore.__cinit__`` stores in a new instance before ``__init__``
    (the readable reference: ``_defaults_of`` in fastws/_py/core.py)."""
    cdef Py_ssize_t* offs
    cdef tuple values
    cdef Py_ssize_t n
    # Two of ConnectionCore's own C fields may be named too (they are
    # __slots__ fields in the twin): _ka_counters and _direct_ok.
    cdef object counters
    cdef unsigned char direct_ok

    def __dealloc__(self):
        PyMem_Free(self.offs)


cdef _Defaults _defaults_of(type cls):
    """The class's _Defaults, kept in its own ``__dict__`` (made on first use)."""
    cdef _Defaults plan = cls.__dict__.get("_slot_plan")
    cdef Py_ssize_t i
    if plan is not None:
        return plan
    merged = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get("_slot_defaults", ()))
    plan = _Defaults()
    plan.counters = merged.pop("_ka_counters", None)
    plan.direct_ok = 1 if merged.pop("_direct_ok", False) else 0
    plan.n = len(merged)
    plan.values = tuple(merged.values())
    plan.offs = <Py_ssize_t*>PyMem_Malloc(max(plan.n, 1) * sizeof(Py_ssize_t))
    if plan.offs == NULL:
        raise MemoryError()
    for i, name in enumerate(merged):
        descr = getattr(cls, name, None)
        plan.offs[i] = member_offset(descr) if type(descr) is MemberDescriptorType else -1
        if plan.offs[i] < 0:
            raise TypeError(f"{cls.__name__}._slot_defaults: {name!r} is not a __slots__ field")
    if plan.n or plan.counters is not None or plan.direct_ok:
        type.__setattr__(cls, "_slot_plan", plan)  # (a class without defaults may be a static type)
    return plan


cdef type _plan_cls = None      # the last class seen (one in a process of one server)
cdef _Defaults _plan = None


cdef _Slot _STATE = _Slot("_state")
cdef _Slot _PARSER = _Slot("_parser")
cdef _Slot _OPTS = _Slot("_opts")
cdef _Slot _WRITE = _Slot("_write")
cdef _Slot _TRANSPORT = _Slot("_transport")
cdef _Slot _PING_INTERVAL = _Slot("ping_interval")
cdef _Slot _PING_TIMEOUT = _Slot("ping_timeout")
cdef _Slot _TIMER_TICK = _Slot("timer_tick")
cdef _Slot _IDLE_TIMEOUT = _Slot("idle_timeout")
cdef _Slot _PINGS_SENT = _Slot("pings_sent")


cdef extern from "Python.h":
    # transport.write(frame) with no bound method made when ``write`` is a
    # method descriptor (uvloop's: a Cython function flagged as one).
    object PyObject_CallMethodOneArg(object obj, object name, object arg)
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)
    enum: Py_TPFLAGS_METHOD_DESCRIPTOR

cdef str _WRITE_NAME = "write"

# The ``write`` of the last transport class written to, when it is a method
# descriptor that no instance can shadow (no instance __dict__: uvloop's
# transports): called with the transport first, as the bound method would
# be, without looking it up per write. None: look it up each time.
cdef type _transport_cls = None
cdef object _transport_write = None


cdef int _learn_transport(type cls) except -1:
    global _transport_cls, _transport_write
    descr = getattr(cls, "write", None)
    _transport_cls = cls
    _transport_write = None
    if (descr is not None and cls.__dictoffset__ == 0
            and type(descr).__flags__ & Py_TPFLAGS_METHOD_DESCRIPTOR):
        _transport_write = descr
    return 0


cdef inline object _write_frame(object self, object frame):
    """``self._write(frame)`` without a bound method kept per connection
    and without the Python frame of StreamConnection's ``_write``: a
    ``_transport`` slot set (a StreamConnection) gets ``write(frame)``;
    else the callable in a ``_write`` slot (the blocking client, tests) or
    the ``_write`` method is called."""
    cdef PyObject* args[2]
    cdef PyObject* p = _TRANSPORT.member(self)
    if p != NULL and p != <PyObject*>None:
        transport = <object>p  # a strong reference during the call
        if type(transport) is not _transport_cls:
            _learn_transport(type(transport))
        if _transport_write is not None:
            args[0] = <PyObject*>transport
            args[1] = <PyObject*>frame
            return PyObject_Vectorcall(_transport_write, args, 2, NULL)
        return PyObject_CallMethodOneArg(transport, _WRITE_NAME, frame)
    p = _WRITE.member(self)
    if p != NULL:
        write = <object>p
        return write(frame)
    return self._write(frame)


@cython.auto_pickle(False)
cdef class ConnectionCore(TimerEntry):
    """Keepalive state and the two C entry points of a connection (see the module docstring).

    The subclass (``fastws.protocol.Connection``) provides, as attributes or
    methods: ``_state``, ``_parser``, ``_opts``, ``_write`` (or ``_transport``:
    ``_write_frame``),
    ``_write_timed_out()``, ``_idle_check(now)``, ``_keepalive_timed_out()``,
    ``_idle_parser()``, ``_timer_expired()``, ``_input_failed(exc)``,
    ``_on_pong(payload)``, ``_feed(data)``, ``_handshake_bytes(data)``,
    ``_check_write_buffer()`` (a keepalive ping written while paused) and,
    when ``_direct_ok`` is set, ``_direct_reads_begin(parser)``.
    """

    # The fields are declared in core.pxd.

    def __cinit__(self):
        global _plan_cls, _plan
        cdef _Defaults plan
        cdef Py_ssize_t i
        cdef PyObject** at
        self._keepalive_at = INF
        self._ping_sent_at = INF
        self._write_deadline = INF
        self._idle_at = INF
        self._last_frames = 0
        self._c_pong_hook = 1
        # The subclasses' __slots__ fields named in their _slot_defaults (and
        # _ka_counters, _direct_ok): set here, in C, so that their __init__
        # sets only what differs.
        cls = type(self)
        if cls is _plan_cls:
            plan = _plan
        else:
            plan = _defaults_of(cls)
            _plan_cls, _plan = cls, plan
        self._ka_counters = plan.counters
        self._c_direct_ok = plan.direct_ok
        for i in range(plan.n):
            value = plan.values[i]
            Py_INCREF(value)
            at = <PyObject**>((<char*><PyObject*>self) + plan.offs[i])
            Py_XDECREF(at[0])
            at[0] = <PyObject*>value

    # The flags, as bools (one byte each in C: core.pxd).
    @property
    def _is_client(self):
        return self._c_is_client != 0

    @_is_client.setter
    def _is_client(self, value):
        self._c_is_client = 1 if value else 0

    @property
    def _general_send(self):
        return self._c_general_send != 0

    @_general_send.setter
    def _general_send(self, value):
        self._c_general_send = 1 if value else 0

    @property
    def _pong_hook(self):
        return self._c_pong_hook != 0

    @_pong_hook.setter
    def _pong_hook(self, value):
        self._c_pong_hook = 1 if value else 0

    @property
    def _direct_ok(self):
        return self._c_direct_ok != 0

    @_direct_ok.setter
    def _direct_ok(self, value):
        self._c_direct_ok = 1 if value else 0

    @property
    def _paused_writing(self):
        """The transport is above write_limit (pause_writing until resume_writing)."""
        return self._c_paused != 0

    @_paused_writing.setter
    def _paused_writing(self, value):
        self._c_paused = 1 if value else 0

    # ------------------------------------------------------------ the timer
    def _open_at(self, double now):
        """The opening handshake succeeded at ``now``: the state becomes OPEN
        and the keepalive and idle-timeout clocks start; returns the first
        deadline for the timer (inf: none). (Connection._open arms it.)"""
        return self._c_open_at(now)

    cdef double _c_open_at(self, double now) except? -1.0:
        opts = _OPTS.get(self)
        _STATE.set(self, OPEN)
        interval = _PING_INTERVAL.get(opts)
        if interval is not None:
            self._keepalive_at = now + <double>interval / 2
        idle = _IDLE_TIMEOUT.get(opts)
        if idle is not None:
            self._idle_at = now + <double>idle
        return self._keepalive_at if self._keepalive_at < self._idle_at else self._idle_at

    def _open_timer(self, driver):
        """The opening handshake succeeded: ``_open_at(driver.now())``, then
        ``driver.arm(self, first)``, or ``driver.cancel(self)`` if armed when
        there is no deadline (Connection._open's timer part, in one call; a
        LoopDriver's own ``now`` and ``arm`` are called in C)."""
        cdef double first
        if isinstance(driver, LoopDriver):
            first = self._c_open_at((<LoopDriver>driver)._now())
            if first != INF:
                (<LoopDriver>driver)._arm(self, first)
                return
        else:
            first = self._c_open_at(driver.now())
            if first != INF:
                driver.arm(self, first)
                return
        if self._wheel is not None:
            driver.cancel(self)

    cpdef object on_timer(self, double now):
        """The connection's one timer fired: handshake, keepalive, write or close timeout.

        While OPEN one wheel entry serves three clocks: keepalive
        (``_keepalive_at``), the write timeout (``_write_deadline``, set while
        the peer leaves the write buffer above write_limit) and the idle
        timeout (``_idle_at``). It is armed for the earliest.
        """
        cdef int state = _STATE.get(self)
        cdef double wd, ka, it, nxt
        if state != OPEN:
            self._timer_expired()
            return None
        wd = self._write_deadline
        if wd != INF:
            if not self._c_paused:
                wd = self._write_deadline = INF  # drained meanwhile
            elif now >= wd:
                self._write_timed_out()
                return None
        ka = self._keepalive_at
        if now >= ka:
            ka = self._keepalive_at = self._keepalive(now)
            if <int>_STATE.get(self) != OPEN:
                return None  # failed: _fail armed the close timeout
        it = self._idle_at
        if now >= it:
            again = self._idle_check(now)
            it = self._idle_at = INF if again is None else <double>again
            if <int>_STATE.get(self) != OPEN:
                return None  # closing: close() armed the close timeout
        nxt = ka if ka < wd else wd
        if it < nxt:
            nxt = it
        return None if nxt == INF else nxt

    cdef double _keepalive(self, double now) except? -2.0:
        """One keepalive check; returns when the next one is due (inf: none).

        The rules are written down in fastws/_py/core.py (``_keepalive``).
        """
        cdef long long frames, last
        cdef double sent, interval, timeout
        opts = _OPTS.get(self)
        interval = _PING_INTERVAL.get(opts)
        parser = _PARSER.get(self)
        if type(parser) is FrameParser:  # activity: frames + payload bytes taken
            frames = <long long>parser_activity(<FrameParser>parser)
        else:
            frames = parser.activity if parser is not None else 0
        last = self._last_frames
        sent = self._ping_sent_at
        if frames != last:  # the peer is alive
            self._last_frames = frames
            if sent == INF or (last != -1 and frames - last > 1):
                self._ping_sent_at = INF
                return now + interval / 2
            # Only the pong since our ping.
            if now - sent < interval - <double>_TIMER_TICK.get(opts):
                self._ping_sent_at = INF
                return sent + interval  # then silent since: a ping
        elif sent != INF:  # unanswered
            timeout = _PING_TIMEOUT.get(opts)
            if now - sent < timeout:
                return sent + timeout
            self._keepalive_timed_out()
            return INF
        # Silent since the last check (or since answering our last ping): ping.
        # The parser is released if it holds nothing.
        if parser is not None:
            self._idle_parser()
        self._ping_sent_at = now
        if self._c_is_client:
            _write_frame(self, build_frame(OP_PING, b"", mask=True))
        else:
            _write_frame(self, _PING_SERVER)
        if self._c_paused:
            # The peer does not read: this ping obeys max_write_buffer too.
            self._check_write_buffer()
        counters = self._ka_counters
        if counters is not None:
            _PINGS_SENT.set(counters, _PINGS_SENT.get(counters) + 1)
        timeout = _PING_TIMEOUT.get(opts)
        return now + (interval if interval < timeout else timeout)

    # ------------------------------------------------------------ bytes in
    def data_received(self, data):
        """asyncio.Protocol: bytes from the peer (the stream adapter's entry point).

        With a parser: one call into it (then, if the rest of a large data
        frame is still to come, ``_direct_reads_begin(parser)``). Idle (parser
        released) and OPEN: a
        lone pong, as keepalive brings every ping_interval, is taken here
        without a parser and without a Python call unless someone listens to
        pongs; anything else goes to ``_feed``. Before the handshake is done:
        ``_handshake_bytes``.
        """
        cdef int state
        parser = _PARSER.get(self)
        if parser is not None:  # the hot path: one call into the parser
            try:
                if type(parser) is FrameParser:
                    (<FrameParser>parser).feed_object(data)  # a C call
                    direct = self._c_direct_ok and parser_wants_direct(<FrameParser>parser)
                else:
                    parser.feed(data)
                    direct = self._c_direct_ok and parser.wants_direct()
            except Exception as exc:
                self._input_failed(exc)
                return
            if direct:
                # The rest of a large data frame is still to come: the adapter
                # reads it straight into the message (no copy of it here).
                self._direct_reads_begin(parser)
            return
        state = _STATE.get(self)
        if state == OPEN:
            if not self._lone_pong(data):
                self._feed(data)
        elif state == CONNECTING:
            self._handshake_bytes(data)
        elif state != CLOSED:
            self._feed(data)

    cdef bint _lone_pong(self, object data) except -1:
        """Handle ``data`` if it is exactly one valid PONG frame (the rules of
        frames.lone_control); False (nothing done) otherwise."""
        # 0xA: PONG; a server expects masked frames, a client unmasked ones
        if lone_opcode(data, not self._c_is_client) != 0xA:
            return False
        self._last_frames = -1  # a frame arrived: the next keepalive check sees life
        if self._c_pong_hook:
            control = lone_control(data, not self._c_is_client)
            try:
                self._on_pong(control[1])
            except Exception as exc:
                self._input_failed(exc)
        return True


# ------------------------------------------------------------ bytes out
# Connection.send (the listener API) and WebSocketMixin.send (the handler
# API): installed as methods, they cost no Python frame per message. The
# readable reference is fastws/_py/core.py.

cdef inline int _send_message(object self, object data) except -1:
    """Write one message's frame; returns 1 if the write buffer is above
    write_limit afterwards (the two ``send`` differ only in what they make
    of that). Small server frames are built and written here; the client
    side (masked), compressed messages and large payloads go to
    ``_send_general``."""
    if not isinstance(self, ConnectionCore):
        raise TypeError(f"expected a fastws connection, got {type(self).__name__}")
    if <int>_STATE.get(self) != OPEN:
        raise self._closed_error()
    if (<ConnectionCore>self)._c_general_send or len(data) >= _LARGE:
        self._send_general(data)
    else:
        _write_frame(self, server_frame(OP_TEXT if PyUnicode_Check(data) else OP_BINARY, data))
    return (<ConnectionCore>self)._c_paused


def conn_send(self, data):
    """Send one message: ``str`` as text, bytes-like as binary.

    Never blocks and never drops: the frame is queued on the transport.
    Returns False when the write buffer is above ``write_limit`` (wait for
    ``on_drain`` before sending more); raises ConnectionClosed once the
    connection is closing or closed.
    """
    if _send_message(self, data):
        return self._check_write_buffer()
    return True


def ws_send(self, data):
    """Send a message (``str``: text, bytes-like: binary). Use it as
    ``await ws.send(data)``: it waits only while the write buffer is above
    ``write_limit``.

    The frame is written at once; when no waiting is needed, the awaitable
    returned is an already-done one (no coroutine per message).
    """
    if _send_message(self, data):
        self._check_write_buffer()  # cuts off a peer over max_write_buffer
        return self._drain()
    return _DONE


# ------------------------------------------------------------ the cyclic GC
cdef extern from "Python.h":
    void PyObject_GC_Track(void* op)
    void PyObject_GC_UnTrack(void* op)
    int PyObject_GC_IsTracked(object op)
    int PyObject_IS_GC(object op)


def gc_untrack(obj):
    """Take ``obj`` out of the cyclic GC's lists: see the twin."""
    if PyObject_IS_GC(obj):
        PyObject_GC_UnTrack(<PyObject*>obj)


def gc_track(obj):
    """Put ``obj`` back in the cyclic GC's lists (if it is a GC object and
    not there already): see the twin."""
    if PyObject_IS_GC(obj) and not PyObject_GC_IsTracked(obj):
        PyObject_GC_Track(<PyObject*>obj)
