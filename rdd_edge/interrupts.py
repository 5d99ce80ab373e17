"""Stop requests: Ctrl-C (SIGINT) and SIGTERM end a command the same way, and never cut a save short.

SIGTERM is what ``docker stop``, SLURM, systemd and ``timeout`` send. Python's default for it is to die
on the spot, which skips every ``except KeyboardInterrupt`` that saves work; :func:`terminate_like_ctrl_c`
turns it into :class:`Terminated` (a ``KeyboardInterrupt``), so the same handlers save ``last.pt`` and
clean staging folders. :func:`deferred` holds both signals back while a file is being written;
:class:`StepBoundary` holds them back during each step of a loop, installed once around it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (work saved); the CLI exits 143 as an unhandled SIGTERM would."""


def _raise_terminated(signum: int, frame: object) -> None:
    _SEEN.append(signum)
    raise Terminated()


def sigterm_received() -> bool:
    """Whether this process was asked to stop by SIGTERM (typer turns the KeyboardInterrupt into exit code 130)."""
    return signal.SIGTERM in _SEEN


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def terminate_like_ctrl_c() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` in the main thread (elsewhere: no change)."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM inside the block; raise the first one once the block is done.

    Checkpoint saves run inside it, so an impatient second Ctrl-C (or a SIGTERM) cannot cut a save short.
    Outside the main thread (where signals cannot be handled), or nested, it leaves the decision to the outer block.
    """
    if not _main_thread() or _PENDING:
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: _PENDING.append(signum)) for s in SIGNALS}
    _PENDING.append(0)  # marks the block as active
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        received = _PENDING[1:]
        _PENDING.clear()
    _deliver(received)


class StepBoundary:
    """A stop request that arrives during a step waits for the step's end; between steps it acts at once.

    Installed once around a training loop (``with StepBoundary() as boundary:``), where a
    :func:`deferred` block per step would swap the process's signal handlers twice each step. The
    loop sets ``boundary.holding = True`` before a step and calls :meth:`release` after it, which
    raises the first request that came meanwhile (``KeyboardInterrupt``, or :class:`Terminated` for
    SIGTERM), so the step count a save records matches the weights. Between steps (waiting for data,
    validating, logging) a signal goes to the handler installed before, as if there were no boundary.
    Outside the main thread (where signals cannot be handled) it does nothing.
    """

    def __init__(self) -> None:
        self.holding = False
        self._received: list[int] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StepBoundary":
        if _main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if exc_type is None:
            self.release()

    def _handle(self, signum: int, frame: object) -> None:
        if self.holding:
            self._received.append(signum)
            return
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            _deliver([signum])

    def release(self) -> None:
        """End the step: raise the first stop request that arrived while ``holding`` (nothing if none did)."""
        self.holding = False
        received, self._received = self._received, []
        _deliver(received)


def _deliver(received: list[int]) -> None:
    """Record the stop signals and raise for the first: :class:`Terminated` for SIGTERM, else KeyboardInterrupt."""
    _SEEN.extend(received)
    if received:
        raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()


_SEEN: list[int] = []  # stop signals this process received
_PENDING: list[int] = []  # non-empty while a deferred block runs (first entry marks it; then the signals received)
