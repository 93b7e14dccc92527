"""Which requests a worker answers in its event loop, and how one that must wait leaves it.

The worker (worker.py) answers a complete request in its event loop, without handing it to a
thread: most reviews are pure computation on bytes already in memory, and the hand-off (a thread
woken, the answer passed back through a pipe, the socket re-registered) cost more than the review.
A request that must wait for I/O does not belong there: while it waits, nothing else on that worker
moves. The one such wait in a review is reading a recipe ConfigMap from the API server
(recipes.py); just before it, `before_io()` raises `MustWait` when the request runs in the event
loop, the application lets it through untouched (nothing has been answered, counted or logged
yet), and the worker answers the request again on a thread from its raw bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class MustWait(Exception):
    """This request needs I/O: answer it on a thread, not in the event loop."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _State(threading.local):
    inline = False
    escaped = ""


_state = _State()


@contextmanager
def inline() -> Iterator[_State]:
    """Mark this thread as the event loop answering a request; the state says whether it escaped."""
    _state.inline, _state.escaped = True, ""
    try:
        yield _state
    finally:
        _state.inline = False


def escaped() -> str:
    """In the event loop, what the request answered now must wait for ('' when nothing)."""
    return _state.escaped if _state.inline else ""


def before_io(what: str) -> None:
    """Call before a blocking call (an API read): in the event loop, the request moves to a thread."""
    if _state.inline:
        _state.escaped = what
        raise MustWait(what)
