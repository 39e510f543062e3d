"""The argument parser every program uses: errors are one line, near misses get a "did you
mean", defaults show in --help. A generic tool (args.py declares the project's flags with it)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

SUGGESTION_CUTOFF = 0.75  # difflib similarity from which an unknown flag gets a "did you mean"


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that appends "(default: X)" to a flag's help, except for a required
    flag (it has none) or help that states its default itself (a default computed from
    another argument, such as RUN/exit_policy.json, is not the None argparse holds)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        """The flag's help, with "(default: X)" appended where it says none itself."""
        if action.required or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (exit status 2), with no prefix
    matching of long flags, a "did you mean" for a near-miss flag, and every default shown in
    --help."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsShown)
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(
        self,
        args: Sequence[str] | None = None,  # type: ignore[override]
        namespace: argparse.Namespace | None = None,
    ) -> argparse.Namespace:
        """argparse's parse_args, with the unknown arguments reported by :meth:`unrecognized`."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(self.unrecognized(unknown))
        return parsed

    def unrecognized(self, unknown: Sequence[str]) -> str:
        """The error for arguments no flag takes: the closest spelling of this program's flags
        for each unknown one (case-insensitive), else where the flags are listed."""
        spelled = {name.lower(): name for action in self._actions for name in action.option_strings}
        guesses = {}
        for name in (word.split("=", 1)[0] for word in unknown if word.startswith("-")):
            close = difflib.get_close_matches(name.lower(), spelled, n=1, cutoff=SUGGESTION_CUTOFF)
            if close:
                guesses[name] = spelled[close[0]]
        message = f"unrecognized arguments: {' '.join(unknown)}"
        if len(guesses) == 1:
            return f"{message}; did you mean {next(iter(guesses.values()))}?"
        if guesses:
            return (
                f"{message}; did you mean "
                + ", ".join(f"{right} for {wrong}" for wrong, right in guesses.items())
                + "?"
            )
        return f"{message} ({self.prog} --help lists the flags)"

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its error: "invalid int value: 'two'"
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a budget, a latency)."""
    value = float(text)
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


positive_float.__name__ = "float"


KINDS = {"file": Path.is_file, "folder": Path.is_dir}


def path_problem(path: Path, kind: str | None, new: bool = False) -> str | None:
    """Why a program could not write `path` as a `kind` (None: only its folders matter, as for
    the stem of several file names), or None: a file or a broken link standing where one of its
    folders would be, the path itself of the other kind, or (`new`) anything already there."""
    if new and (path.exists() or path.is_symlink()):
        return f"{path} already exists; give a new {kind} (nothing was overwritten)"
    if kind is not None and (path.exists() or path.is_symlink()) and not KINDS[kind](path):
        return f"{path} exists and is not a {kind}"
    for parent in path.parents:
        if parent.is_symlink() and not parent.exists():
            return f"{parent} is a broken link"
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is a file, not a folder"
    return None


def output(kind: str | None, new: bool = False) -> Callable[[str], Path]:
    """argparse type: a path a program will write as a `kind` ("file", "folder"; None: a stem
    of file names), and only as a new one if `new`, refused when parsed if it cannot be (else
    writing would fail only after the work, with a traceback)."""

    def check(text: str) -> Path:
        """`text` as a Path, or argparse's one-line error saying why it cannot be written."""
        try:
            problem = path_problem(Path(text), kind, new)
        except OSError as error:  # e.g. a folder on the way that may not be read
            problem = f"{text}: {error.strerror}"
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return Path(text)

    check.__name__ = "path"
    return check


output_file = output("file")  # a JSON report
output_folder = output("folder")  # a run, a study
output_new_folder = output("folder", new=True)  # an export, saved images: nothing is overwritten
output_stem = output(None)  # PATH of PATH.json, PATH.csv, PATH.png


def existing(kind: str) -> Callable[[str], Path]:
    """argparse type: a `kind` ("file" or "folder") that is there, told apart from a missing path
    and from one of the other kind."""

    def check(text: str) -> Path:
        """`text` as a Path, or argparse's one-line error saying what is there instead."""
        path = Path(text)
        try:
            if KINDS[kind](path):
                return path
            problem = "not a" if path.exists() else "no such"
        except OSError as error:
            raise argparse.ArgumentTypeError(f"{text}: {error.strerror}") from None
        raise argparse.ArgumentTypeError(f"{text}: {problem} {kind}")

    check.__name__ = kind
    return check


existing_folder = existing("folder")  # a run, an export
existing_file = existing("file")  # a policy, a checkpoint
