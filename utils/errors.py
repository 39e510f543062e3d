"""User-facing errors and the command-line wrapper that reports them without a traceback."""

import io
import os
import select
import sys
from typing import Callable, NoReturn, Optional, Sequence

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 75  # sysexits' EX_TEMPFAIL: stopped on request, rerun with --resume auto
EXIT_BROKEN_PIPE = 141  # what a shell reports for a tool that SIGPIPE ended (128 + 13)


class UserError(Exception):
    """An error caused by the user's input (a flag, a path, a file); reported as one line."""


class Preempted(Exception):
    """Training stopped on a signal after saving a recovery checkpoint; the same command with
    `--resume auto` continues it. Reported as one line and exit status EXIT_PREEMPTED."""


def run_cli(
    main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None
) -> NoReturn:
    """Run `main(argv)`; a UserError becomes `error: <msg>` on stderr and exit status 2, a
    Preempted stop `stopped: <msg>` and exit status EXIT_PREEMPTED. When the reader of stdout
    goes away (`predict.py ... | head`) it stops quietly with EXIT_BROKEN_PIPE, as Unix tools do;
    any other broken pipe is a failure like any other."""
    try:
        main(argv)
        sys.stdout.flush()  # here, so that a reader gone before the last buffered line is seen
    except UserError as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else exit's flush fails again
        sys.exit(EXIT_BROKEN_PIPE)
    sys.exit(0)


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    try:
        descriptor = sys.stdout.fileno()
        poller = select.poll()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no real file, or no poll
        return False
    poller.register(descriptor, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
