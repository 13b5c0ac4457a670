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


def test_one_signal_met_again_as_an_exception_is_not_a_repeat() -> None:
    """One Ctrl-C printed "already stopping" twice: the flows' recorder and the CLI, meeting the
    KeyboardInterrupt the handler raised, reported it as two more signals (issue 24.4)."""
    from pe_dr import interrupts

    handlers = _handlers()
    repeats: list[int] = []
    interrupts.on_repeat(repeats.append)
    interrupts.reset()
    try:
        with interrupts.shielded():  # (the first stop makes later signals absorbed: restore them)
            first = interrupts.begin(signal.SIGINT)  # the signal handler
            assert interrupts.seen(signal.SIGINT) is first  # the flows' recorder
            assert interrupts.seen(signal.SIGINT) is first  # the CLI
            assert repeats == []
            interrupts.begin(signal.SIGINT)  # a real second Ctrl-C is one repeat
            assert repeats == [signal.SIGINT]
    except KeyboardInterrupt:
        pass  # shielded() raises the stop that began inside it, once the block is done
    finally:
        interrupts.off_repeat(repeats.append)
        interrupts.reset()
        _restore(handlers)


def test_a_stop_first_met_as_an_exception_begins_it() -> None:
    from pe_dr import interrupts

    handlers = _handlers()
    interrupts.reset()
    try:
        with interrupts.shielded():
            stop = interrupts.seen(signal.SIGTERM)
            assert interrupts.current() is stop and stop.signum == signal.SIGTERM
    except BaseException as exc:  # shielded() raises the stop it saw begin
        if isinstance(exc, SystemExit):  # the core's default
            assert exc.code == 128 + signal.SIGTERM
        else:  # as Prefect raises it, once flows.common is imported (a test process may have)
            assert type(exc).__name__ == "TerminationSignal", exc
    finally:
        interrupts.reset()
        _restore(handlers)


def _handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, object]) -> None:
    """A stop leaves later signals absorbed to the process's end: not this test process's."""
    for sig, handler in handlers.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
