"""Command-line flags declared as data, by the component they configure (docs/flags.md).

A :class:`Flag` says how a flag is spelled, parsed, checked and documented, and what `--resume`
may do with it. Backbones, objectives and the programs' own flag groups declare theirs; the
parsers in args.py turn them into argparse arguments, so this module imports neither argparse
nor torch, and a component that declares flags knows nothing about parsing.
"""

from __future__ import annotations

import ast
import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence


class FlagError(ValueError):
    """A flag value (or combination) that cannot be used; the message names the flag."""


class Resume(enum.Enum):
    """What a resumed run does with a flag typed on its command line."""

    MATCH = "must match"  # the run's saved value; a different typed value is refused
    CHANGE = "may change"  # where and how fast the run goes, how it logs: the typed value wins
    GROW = "may grow"  # the typed value wins when it is at least the saved one (--epochs)


class Kind(enum.Enum):
    """How a flag takes its value."""

    VALUE = "value"  # --x VALUE
    SWITCH = "switch"  # --x (True), absent (False)
    TOGGLE = "toggle"  # --x / --no-x
    OPTIONAL = "optional"  # --x (its `const`) or --x VALUE
    LIST = "list"  # --x A B C: `parse` applied to each word, a list of the results


@dataclass(frozen=True)
class Range:
    """A rule every value of a flag must meet, and how the error states it ("at least 1")."""

    rule: Callable[[Any], bool]
    wanted: str

    def refusal(self, name: str, value: Any) -> Optional[str]:
        """The one-line error for `value` (a value or a list of them), or None if it fits."""
        values = value if isinstance(value, list) else [value]
        if all(self.rule(v) for v in values):
            return None
        return f"{name} must be {self.wanted}, got {','.join(f'{v:g}' for v in values)}"


def at_least(minimum: float) -> Range:
    """Finite values of at least `minimum`."""
    wanted = "at least 1" if minimum == 1 else f"finite and >= {minimum:g}"
    return Range(lambda value: math.isfinite(value) and value >= minimum, wanted)


COUNT = at_least(1)


@dataclass(frozen=True)
class Flag:
    """One flag: its spellings (the first names it), destination, parsing, default and help.

    Every long name is also accepted with its other separator (`--lr-milestones` for
    `--lr_milestones`). `parse` turns the typed text into the value (raising ValueError or
    argparse.ArgumentTypeError with the reason); `range` checks the value. A default of None
    means "not given" unless the help says what None stands for.
    """

    names: tuple[str, ...]
    help: str
    default: Any = None
    parse: Optional[Callable[[str], Any]] = None
    kind: Kind = Kind.VALUE
    choices: Optional[Sequence[Any]] = None
    range: Optional[Range] = None
    metavar: Optional[str] = None
    const: Any = None
    dest: Optional[str] = None
    resume: Resume = Resume.MATCH

    @property
    def name(self) -> str:
        """The spelling errors and docs use."""
        return self.names[0]

    @property
    def key(self) -> str:
        """Where the value goes: `dest`, else a positional's name, else the first long name
        with '-' as '_'."""
        if self.dest:
            return self.dest
        if not self.names[0].startswith("-"):
            return self.names[0]
        return next(n for n in self.names if n.startswith("--"))[2:].replace("-", "_")


def spellings(names: Sequence[str]) -> list[str]:
    """The names plus, for each long name, its other separator spelling (_ <-> -)."""
    result = list(names)
    for name in names:
        if name.startswith("--"):
            body = name[2:]
            for other in (body.replace("_", "-"), body.replace("-", "_")):
                if "--" + other not in result:
                    result.append("--" + other)
    return result


def int_list(text: str, sep: str = "-") -> list[int]:
    """'1-2-4' -> [1, 2, 4]."""
    try:
        return [int(v) for v in text.split(sep)]
    except ValueError:
        raise ValueError(f"expected integers separated by '{sep}', got {text!r}") from None


def comma_int_list(text: str) -> list[int]:
    """'150,225' -> [150, 225] ('' is none)."""
    return int_list(text, ",") if text else []


def float_list(text: str) -> list[float]:
    """'0.5' or '0.5,1.0' -> a list of floats."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected numbers separated by ',', got {text!r}") from None


def count_or_fraction(text: str) -> int | float:
    """'5000' -> a count, '0.1' -> a fraction."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    raise ValueError(f"expected a count or a fraction, got {text!r}")


def key_value(text: str) -> str:
    """'key=value' with a Python identifier as key, checked and kept as typed (JSON-ready)."""
    key, equals, _ = text.partition("=")
    if not (equals and key.isidentifier()):
        raise ValueError(f"expected key=value, got {text!r}")
    return text


def literal_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """['img_size=32', 'act=gelu'] -> {'img_size': 32, 'act': 'gelu'}: each value a Python
    literal where it reads as one, else the text itself (as timm's train.py parses
    --model-kwargs); nothing is evaluated."""
    kwargs: dict[str, Any] = {}
    for item in items:
        key, _, text = key_value(item).partition("=")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return kwargs


def values_of(flags: Sequence[Flag], values: dict[str, Any]) -> dict[str, Any]:
    """The values of `flags` among parsed `values` (by key), in declaration order."""
    return {flag.key: values[flag.key] for flag in flags}
