# cython: language_level=3
"""The handler API's inbox: messages for ``recv()`` / ``async for``.

The Cython build of fastws/_py/aio.py (same names, same behaviour;
tests/test_aio.py runs both). C-level details the twin does not have, each
chosen after a callgrind measurement (bench/e2e/instructions.py):
``Inbox.__anext__`` is the ``am_anext`` slot (no Python frame per message);
``Waiter`` implements ``am_send`` (patched into its type at import, below: no
StopIteration object per message); while pending it yields a reused
stand-in C Future so the C Task registers its wake-up through its fast path,
and the wake-up is handed a done C Future; 3.11's pure-Python
``asyncio.current_task`` is replaced by a lookup in the C Task's own dict.
See docs/design/protocol.md#the-handler-inbox-no-future-per-message.
"""
cimport cython
from cpython.ref cimport PyObject, PyTypeObject, Py_INCREF
from collections import deque
import asyncio
import contextvars
import types

__all__ = ["Waiter", "Inbox", "DONE"]

cdef extern from "Python.h":
    ctypedef enum PySendResult:
        PYGEN_RETURN
        PYGEN_ERROR
        PYGEN_NEXT
    ctypedef PySendResult (*sendfunc)(PyObject*, PyObject*, PyObject**)
    ctypedef struct PyAsyncMethods:
        sendfunc am_send
    ctypedef struct PyTypeObjectAsync "PyTypeObject":
        PyAsyncMethods* tp_as_async
    void PyErr_SetObject(PyObject* type, PyObject* value)
    PyObject* PyDict_GetItem(object d, object key)
    void PyType_Modified(PyTypeObject* type)

cdef object _current_task = asyncio.current_task
# Python 3.11's asyncio.current_task is a Python function reading this dict
# (the C Task's own); calling it cost far more per message than the dict
# lookup (figures: docs/performance.md). Newer Pythons have a C current_task:
# that is called.
cdef object _current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
if type(_current_tasks) is not dict or type(_current_task) is not types.FunctionType:
    _current_tasks = None
cdef object _Task = asyncio.Task
cdef object _Future = asyncio.Future
cdef object _CancelledError = asyncio.CancelledError
cdef object _InvalidStateError = asyncio.InvalidStateError
cdef object _copy_context = contextvars.copy_context
cdef object _wakeup_type = None    # the type of a Task's wake-up callback, once seen


cdef inline bint _task_running(object loop) except -1:
    if _current_tasks is not None:
        return PyDict_GetItem(<dict>_current_tasks, loop) != NULL
    return _current_task(loop) is not None


cdef bint _is_task_wakeup(object fn) except -1:
    """``fn`` is the wake-up callback an asyncio Task registers on what it awaits."""
    global _wakeup_type
    if type(fn) is _wakeup_type:
        return True
    if isinstance(getattr(fn, "__self__", None), _Task):
        _wakeup_type = type(fn)
        return True
    return False


# A done C Future per loop: what the inline wake-up hands the Task's wake-up
# callback. The C Task reads a C Future's result directly, where it calls
# ``result()`` by name on any other object (dearer: docs/performance.md); the
# coroutine then takes the message from the Waiter itself (am_send).
cdef object _done_loop = None
cdef object _done_fut = None


cdef object _done_future(object loop):
    global _done_loop, _done_fut
    if loop is not _done_loop:
        fut = loop.create_future()
        fut.set_result(None)
        _done_fut = fut
        _done_loop = loop
    return _done_fut

cdef enum:
    _PENDING = 0
    _DONE = 1
    _CANCELLED = 2


cdef class Waiter:
    """A one-shot, asyncio-compatible future for one message.

    It has the Future API that asyncio uses on foreign futures (``Task`` and
    ``wait_for``/``gather``/``shield`` through ``ensure_future``): ``get_loop``,
    ``done``, ``cancelled``, ``result``, ``exception``,
    ``add_done_callback(fn, *, context=None)``, ``remove_done_callback``,
    ``cancel(msg=None)``, ``_asyncio_future_blocking`` and ``__await__``.
    """
    def __cinit__(self, loop):
        self._loop = loop

    def get_loop(self):
        return self._loop

    def done(self):
        self._abandoned()
        return self._state != _PENDING

    def cancelled(self):
        self._abandoned()
        return self._state == _CANCELLED

    def result(self):
        if self._state == _DONE:
            if self._exception is not None:
                raise self._exception
            return self._result
        if self._state == _CANCELLED:
            raise self._cancelled_error()
        raise _InvalidStateError("Result is not ready.")

    def exception(self):
        if self._state == _DONE:
            return self._exception
        if self._state == _CANCELLED:
            raise self._cancelled_error()
        raise _InvalidStateError("Exception is not set.")

    cdef object _cancelled_error(self):
        if self._cancel_message is None:
            return _CancelledError()
        return _CancelledError(self._cancel_message)

    def add_done_callback(self, fn, *, context=None):
        inline = context is not None and _is_task_wakeup(fn)
        if context is None:
            context = _copy_context()
        if self._state != _PENDING:
            self._loop.call_soon(fn, self, context=context)
        elif self._callback is None and self._more is None:
            self._callback = fn
            self._context = context
            self._inline = inline
        else:
            if self._more is None:
                self._more = []
            self._more.append((fn, context))

    def remove_done_callback(self, fn):
        cdef Py_ssize_t removed = 0
        if self._callback is not None and self._callback == fn:
            self._callback = None
            self._context = None
            removed += 1
        if self._more:
            kept = [pair for pair in self._more if pair[0] != fn]
            removed += len(self._more) - len(kept)
            self._more = kept or None
        return removed

    def cancel(self, msg=None):
        if self._state != _PENDING or self._abandoned():
            return False
        self._state = _CANCELLED
        self._cancel_message = msg
        if self._yielded:  # the task awaiting us gets its CancelledError
            self._fut.cancel(msg)
        self._schedule()
        return True

    def set_result(self, result):
        if self._state != _PENDING:
            raise _InvalidStateError("invalid state")
        self._resolve(result, None)

    def set_exception(self, exception):
        if self._state != _PENDING:
            raise _InvalidStateError("invalid state")
        if isinstance(exception, type):
            exception = exception()
        self._resolve(None, exception)

    cdef bint _abandoned(self) except -1:
        """The task awaiting this waiter was cancelled (through its stand-in)."""
        if self._yielded and self._state == _PENDING and self._fut.done():
            self._state = _CANCELLED
            self._schedule()
            return True
        return False

    cdef int _resolve(self, object result, object exc) except -1:
        """Done: the awaiting task runs now when that is safe, else it is
        scheduled like any Future callback (see the twin's docstring).

        Returns 1 when delivered, 2 when delivered but the stand-in future is
        spent (completed: the inbox makes a new one), 0 when the awaiting task
        had been cancelled (nothing delivered; the stand-in is spent)."""
        cdef object loop = self._loop
        if self._yielded:
            # Awaited by a task: am_send yielded the stand-in and the task
            # registered its wake-up on it.
            fut = self._fut
            callbacks = fut._callbacks
            if callbacks is None and fut.done():
                self._state = _CANCELLED
                self._schedule()
                return 0
        self._state = _DONE
        self._result = result
        self._exception = exc
        if self._yielded:
            if (callbacks is not None and len(<list>callbacks) == 1 and self._callback is None
                    and self._more is None and not _task_running(loop)):
                cb, ctx = (<list>callbacks)[0]
                if _is_task_wakeup(cb):
                    fut.remove_done_callback(cb)  # the stand-in stays pending, for the next wait
                    ctx.run(cb, _done_future(loop))
                    return 1
            fut.set_result(None)  # the plain way: the task wakes through call_soon
            self._schedule()
            return 2
        cb = self._callback
        if cb is None:
            if self._more is not None:
                self._schedule()
            return 1
        if self._inline and self._more is None and not _task_running(loop):
            ctx = self._context
            self._callback = None
            self._context = None
            ctx.run(cb, _done_future(loop))
            return 1
        self._schedule()
        return 1

    cdef int _schedule(self) except -1:
        loop = self._loop
        cb = self._callback
        if cb is not None:
            ctx = self._context
            self._callback = None
            self._context = None
            loop.call_soon(cb, self, context=ctx)
        if self._more is not None:
            more = self._more
            self._more = None
            for cb, ctx in more:
                loop.call_soon(cb, self, context=ctx)
        return 0

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._state == _PENDING:
            self._asyncio_future_blocking = True
            return self
        value = self.result()
        raise StopIteration(value)

    def __repr__(self):
        state = ("pending", "done", "cancelled")[self._state]
        return f"<fastws Waiter {state}>"


cdef object _stand_in(Waiter w):
    fut = w._fut
    if fut is None:
        fut = w._fut = _Future(loop=w._loop)
    fut._asyncio_future_blocking = True
    w._yielded = True
    return fut


cdef PySendResult _waiter_send(PyObject* obj, PyObject* arg, PyObject** result) noexcept:
    # The am_send slot: what ``await waiter`` calls. Returns the message
    # (PYGEN_RETURN) without a StopIteration, raises (PYGEN_ERROR), or, while
    # pending, yields a stand-in: a plain C Future of the loop that the Task
    # awaiting us registers its wake-up on through its fast path (cheaper
    # than a foreign future's getattr/get_loop/add_done_callback/setattr
    # round). ``_resolve`` takes that wake-up off the stand-in and runs it;
    # the stand-in stays pending and the inbox reuses it for its next waiter
    # (creating a C Future calls loop.get_debug(); figures for both in
    # docs/performance.md). It is completed only by a
    # cancellation of the awaiting task or by the fallback wake-up, and is
    # then replaced.
    cdef Waiter w = <Waiter>obj
    cdef object exc
    cdef object exc_type
    cdef object fut
    if w._state == _PENDING:
        try:
            fut = _stand_in(w)
        except BaseException as e:
            exc = e
        else:
            Py_INCREF(fut)
            result[0] = <PyObject*>fut
            return PYGEN_NEXT
    elif w._state == _DONE:
        exc = w._exception
        if exc is None:
            Py_INCREF(w._result)
            result[0] = <PyObject*>w._result
            return PYGEN_RETURN
    else:
        exc = w._cancelled_error()
    exc_type = type(exc)
    PyErr_SetObject(<PyObject*>exc_type, <PyObject*>exc)
    result[0] = NULL
    return PYGEN_ERROR


cdef PyTypeObjectAsync* _wt = <PyTypeObjectAsync*>Waiter
_wt.tp_as_async.am_send = _waiter_send
PyType_Modified(<PyTypeObject*>Waiter)


cdef class _Done:
    """An awaitable that is already done: ``await DONE`` is None, at once.

    What ``ws.send()`` returns when it need not wait: its am_await and
    am_send are C slots (the twin's tuple-based one costs more per await,
    through a Python-level ``__await__`` lookup; see docs/performance.md)."""
    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration

    def __repr__(self):
        return "<fastws DONE>"


cdef PySendResult _done_send(PyObject* obj, PyObject* arg, PyObject** result) noexcept:
    Py_INCREF(None)
    result[0] = <PyObject*>None
    return PYGEN_RETURN


cdef PyTypeObjectAsync* _dt = <PyTypeObjectAsync*>_Done
_dt.tp_as_async.am_send = _done_send
PyType_Modified(<PyTypeObject*>_Done)

DONE = _Done()


cdef class Inbox:
    """The messages of one connection for its handler (see the twin)."""
    def __cinit__(self, conn, loop, Py_ssize_t max_queue):
        self._conn = conn
        self.loop = loop
        self._max_queue = max_queue

    def deliver(self, data):
        """The parser's on_message: wake the waiting recv() or queue the message."""
        cdef Waiter w = self._waiter
        if w is not None:
            self._waiter = None
            if w._state == _PENDING:
                r = w._resolve(data, None)
                if r != 1:
                    self._standin = None
                if r:
                    return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(data)
        if len(queue) >= self._max_queue and not self._paused:
            self._paused = True
            self._conn.pause_reading()

    cdef Waiter _next(self, bint iterating):
        cdef Waiter w
        queue = self._queue
        if queue:
            w = Waiter(self.loop)
            w._state = _DONE
            w._result = queue.popleft()
            if self._paused and len(queue) <= self._max_queue // 4:
                self._paused = False
                self._conn.resume_reading()
            return w
        if self.ended:
            return None
        w = self._waiter
        if w is not None:
            if w._state == _PENDING and not w._abandoned():
                raise RuntimeError("recv() is already being awaited by another task")
            if w._state == _CANCELLED:
                self._standin = None  # cancelled with its waiter
        fut = self._standin
        if fut is None:
            fut = self._standin = _Future(loop=self.loop)
        w = self._waiter = Waiter(self.loop)
        w._fut = fut
        self._iter_waiter = iterating
        return w

    def get(self):
        """An awaitable for the next message (ConnectionClosed at the end)."""
        w = self._next(False)
        if w is None:
            raise self._conn._closed_error()
        return w

    def __aiter__(self):
        return self

    def __anext__(self):
        w = self._next(True)
        if w is None:
            exc = self._conn._closed_error()
            if self._conn._closed_ok(exc):
                raise StopAsyncIteration
            raise exc
        return w

    def end(self, exc):
        """No message can come any more: fail the pending waiter with ``exc``
        (StopAsyncIteration instead when ``async for`` waits and the close
        was normal). Queued messages are still returned first."""
        self.ended = True
        cdef Waiter w = self._waiter
        if w is not None:
            self._waiter = None
            if w._state == _PENDING and not w._abandoned():
                if self._iter_waiter and self._conn._closed_ok(exc):
                    exc = StopAsyncIteration()
                w._resolve(None, exc)
        self._standin = None

    def __len__(self):
        return len(self._queue) if self._queue is not None else 0
