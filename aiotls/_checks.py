"""The option table's generic checkers, shared by context and connection options.

Each is an ``Opt(check=...)``: (option, value given or default) -> the value to use,
raising TypeError (wrong type) or ValueError (bad value) with the option named first.
They sit below :mod:`aiotls.context` so that both tables can name them.
"""

import math
from collections.abc import Callable
from typing import Any


def expect_bool(option: str, value: object) -> bool:
    """The value if it is a bool; else a TypeError naming the option."""
    if not isinstance(value, bool):
        raise TypeError(f"{option}: expected bool, got {type(value).__name__}")
    return value


def text(option: str, value: object) -> str | None:
    """A str, or None."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{option}: expected str, got {type(value).__name__}")
    return value


def timeout(option: str, value: object) -> float:
    """Seconds: a non-negative number (0: no limit)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{option}: expected seconds as a number, got {type(value).__name__}")
    if value < 0 or math.isnan(value):
        raise ValueError(f"{option}: must be >= 0 seconds, got {value!r}")
    return float(value)


def hook(option: str, value: object) -> Callable[..., Any] | None:
    """A hook: a callable (plain or coroutine function), or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{option}: expected a callable, got {type(value).__name__}")
    return value


def bits(option: str, value: object) -> int:
    """A positive int number of bits."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{option}: expected an int number of bits, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{option}: must be positive")
    return value
