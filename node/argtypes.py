"""argparse types for the CLI's numeric flags: a value out of range is a one-line usage error (exit 2)
naming the flag, never a run that starts with it (`polchain mine --blocks -1` mined "-1 blocks")."""
from __future__ import annotations

import argparse
import math
from typing import Callable


def _number(kind: type, least: float, strict: bool, what: str) -> Callable[[str], int | float]:
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (kind is float and not math.isfinite(v)) or v < least or (strict and v == least):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v
    parse.__name__ = what.replace(" ", "_")   # argparse names the type in some messages
    return parse


positive_int = _number(int, 0, True, "a positive integer")
nonneg_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")
nonneg_float = _number(float, 0.0, False, "a number >= 0")


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    v = positive_int(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (1-65535), got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    v = positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return v
