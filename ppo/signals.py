"""SIGINT and SIGTERM in a training run: during training they ask the loop to stop at the next step (a second
one stops at once); before and after it they raise KeyboardInterrupt, kept while files close, so that the
run ends with exit code 130 and a line naming the checkpoint kept."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from ppo.loop import Trainer

class Interrupts:
    """The SIGINT/SIGTERM handler outside training: raise KeyboardInterrupt. After :meth:`defer` the first
    signal is kept (a second one still raises at once) and :meth:`resume` raises it, so that a signal while the
    training's files close is reported by the final phase, which knows what was saved."""

    def __init__(self) -> None:
        self.deferred = self.pending = False

    def handle(self, _signum: int, _frame: Any) -> None:
        if self.deferred and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    def defer(self) -> None:
        self.deferred = True

    def resume(self) -> None:
        """Stop deferring; raise KeyboardInterrupt for a signal kept meanwhile."""
        pending, self.deferred, self.pending = self.pending, False, False
        if pending:
            raise KeyboardInterrupt


INTERRUPTS = Interrupts()


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (:data:`INTERRUPTS`; training installs its own
    stop-at-the-next-step handler), so a signal during set-up, the final evaluation or the videos ends the run
    with exit code 130 and a line naming the checkpoint kept. Outside the main thread signals cannot be handled
    and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTS.deferred = INTERRUPTS.pending = False
    previous = {sig: signal.signal(sig, INTERRUPTS.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        INTERRUPTS.deferred = INTERRUPTS.pending = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train_with_signals(trainer: Trainer, progress: Any) -> None:
    """:meth:`Trainer.train` with SIGINT and SIGTERM asking it to stop at the next step (a second signal stops
    at once, without a checkpoint)."""
    def request_stop(_signum: int, _frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.train(progress)
    finally:
        if progress is not None:
            progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
