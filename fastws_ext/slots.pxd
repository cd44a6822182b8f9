# Reading a Python object's __slots__ fields at their offsets, from C.
#
# A class's __slots__ fields sit at fixed offsets in its instances (and in
# those of its subclasses), described by member descriptors on the class.
# fastws_ext.fanout and fastws_ext.conn learn the offsets of Connection's
# fields once and then read them without an attribute lookup each.
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        const char* name
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "structmember.h":
    int T_OBJECT_EX


cdef inline Py_ssize_t member_offset(object descr) noexcept:
    """The offset of an object slot described by ``descr`` (a member
    descriptor: the caller checks its type), or -1 for any other kind."""
    cdef PyMemberDef* member = (<PyMemberDescrObject*>descr).d_member
    if member.type != T_OBJECT_EX:
        return -1
    return member.offset


cdef inline PyObject* slot_at(object obj, Py_ssize_t offset) noexcept:
    """The field at ``offset`` of ``obj`` (borrowed; NULL when not set)."""
    return (<PyObject**>((<char*><PyObject*>obj) + offset))[0]
