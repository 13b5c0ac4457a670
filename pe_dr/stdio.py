"""Standard output and error that outlive whoever reads them.

A flow run started by a worker or `pe-dr serve` writes its console log into a pipe its parent
reads. When that parent is killed, the next write fails with BrokenPipeError, and Prefect's
console handler (rich's Console.on_broken_pipe) answers it with SystemExit(1), in the middle of
whatever logged: measured here, the failover's rollback was cut short as its task logged
"Running hook", and the halted primary stayed down. `survive_closed_output` makes such writes
go to /dev/null instead (the run's log still reaches the Prefect API), as Python's own note on
SIGPIPE advises (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import IO, Any

__all__ = ["survive_closed_output"]


class _Survivor:
    """A text stream that, once its reader is gone, points its file descriptor at /dev/null and
    drops what is written, rather than raising."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.lost = False

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BrokenPipeError:
            self._to_devnull()
            with contextlib.suppress(OSError, ValueError):
                return fn(*args)  # the buffered text now drains into /dev/null
            return None

    def _to_devnull(self) -> None:
        with self._lock:
            if self.lost:
                return
            self.lost = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)

    def write(self, text: str) -> int:
        self._guard(self._stream.write, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, …
        return getattr(self._stream, name)


def survive_closed_output() -> None:
    """From now on, writes to this process's stdout and stderr never fail for want of a reader:
    `sys.stdout`, `sys.stderr` and every logging stream handler (and its rich console) already
    writing to them are switched to a surviving stream. Safe to call twice."""
    swapped: dict[int, _Survivor] = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, _Survivor):
            continue
        survivor = _Survivor(stream)
        swapped[id(stream)] = survivor
        setattr(sys, name, survivor)
    if not swapped:
        return
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, logging.StreamHandler):
                continue
            found = swapped.get(id(handler.stream))
            if found is None:
                continue
            handler.setStream(found)
            console = getattr(handler, "console", None)  # Prefect's console handler (rich)
            if console is not None and getattr(console, "file", None) is found._stream:
                console.file = found
