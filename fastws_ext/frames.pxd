# C-level surface of fastws_ext.frames; the parser's fields are private.
cdef class FrameParser:
    pass
