"""Which stop signal an exception stands for (milliseconds)."""

from __future__ import annotations

import signal

from pe_dr.interrupts import signal_of


class Terminated(BaseException):
    """As Prefect's TerminationSignal: a BaseException carrying the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signum


def _raised_while_handling(first: BaseException, then: Exception) -> Exception:
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904 (the context is the point)
    except Exception as exc:
        return exc


def test_the_signals_themselves() -> None:
    assert signal_of(KeyboardInterrupt()) == signal.SIGINT
    assert signal_of(Terminated(signal.SIGTERM)) == signal.SIGTERM


def test_an_error_raised_while_a_signal_was_handled_stands_for_the_signal() -> None:
    # a SIGTERM as Prefect creates a task run: ValueError("Task run is not set")
    exc = _raised_while_handling(Terminated(signal.SIGTERM), ValueError("Task run is not set"))
    assert signal_of(exc) == signal.SIGTERM


def test_an_ordinary_error_is_no_signal() -> None:
    assert signal_of(ValueError("boom")) is None
    assert signal_of(_raised_while_handling(ValueError("a"), RuntimeError("b"))) is None
    error_with_a_number = OSError(4, "interrupted system call")
    error_with_a_number.signal = 15  # type: ignore[attr-defined]
    assert signal_of(error_with_a_number) is None, "an Exception is never a stop"
