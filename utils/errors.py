"""User-facing errors and the command-line wrapper that reports them without a traceback."""
import sys
from typing import Callable, NoReturn, Optional, Sequence


class UserError(Exception):
    """An error caused by the user's input (a flag, a path, a file); reported as one line."""


def run_cli(main: Callable[[Optional[Sequence[str]]], object],
            argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run `main(argv)`; a UserError becomes `error: <msg>` on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(0)
