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
    cdef public bint _is_client
    cdef public bint _general_send      # every send goes through _send_general (client: masked; deflate)
    cdef public bint _pong_hook         # False: a pong needs no _on_pong call (nobody listens)
    cdef public bint _direct_ok         # the adapter can switch to direct reads (_direct_reads_begin)
    cdef public object _ka_counters     # None, or an object whose pings_sent counts our pings

    cpdef object on_timer(self, double now)
    cdef double _keepalive(self, double now) except? -2.0
    cdef bint _lone_pong(self, object data) except -1
