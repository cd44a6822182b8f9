# C-level surface of fastws_ext.limit (cimported by frames.pyx: the parser
# counts each data message with limit_count before its on_message).

cdef class RateLimits:
    cdef readonly double msg_step     # seconds per message (0: no message limit)
    cdef readonly double msg_tol      # burst * msg_step
    cdef readonly double byte_step    # seconds per byte (0: no byte limit)
    cdef readonly double byte_tol


cdef class Limiter:
    cdef RateLimits limits
    cdef public double msg_tat        # the buckets' theoretical arrival times (inf: refused)
    cdef public double byte_tat


cdef int limit_count(Limiter bucket, object data) except -1
    # 0: deliver ``data``; 1: drop it (the connection was refused before and
    # is closing); raises ProtocolError("rate limit", 1008) on the refusal.
