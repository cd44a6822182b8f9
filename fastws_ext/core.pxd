# C-level surface of fastws_ext.core (the Python contract is core.pyi; the
# readable reference is fastws/_py/core.py, with the same fields and names).
from fastws_ext.wheel cimport TimerEntry


cdef class ConnectionCore(TimerEntry):
    # Keepalive clocks are C doubles, +inf meaning "not set" (no float object
    # per connection).
    cdef public double _keepalive_at    # next keepalive check (inf: keepalive off)
    cdef public double _ping_sent_at    # our last keepalive ping, until a check sees its answer (inf: none)
    cdef public double _write_deadline  # write timeout while paused (inf: none)
    cdef public double _idle_at         # next idle-timeout check (inf: none)
    cdef public long long _last_frames  # frames seen at the last check; -1: a lone pong came
    cdef public object _ka_counters     # None, or an object whose pings_sent counts our pings
    # Five flags of one byte each (a bint takes four; with _paused_writing
    # here instead of in a __slots__ field the object is 16 bytes smaller,
    # docs/design/memory.md#the-connection-object). Python reads and writes
    # them as bools through the properties without the "_c" (core.pyx).
    cdef unsigned char _c_is_client
    cdef unsigned char _c_general_send  # every send goes through _send_general (client: masked; deflate)
    cdef unsigned char _c_pong_hook     # 0: a pong needs no _on_pong call (nobody listens)
    cdef unsigned char _c_direct_ok     # the adapter can switch to direct reads (_direct_reads_begin)
    cdef unsigned char _c_paused        # _paused_writing: the transport is above write_limit

    cpdef object on_timer(self, double now)
    cdef double _c_open_at(self, double now) except? -1.0
    cdef double _keepalive(self, double now) except? -2.0
    cdef bint _lone_pong(self, object data) except -1
