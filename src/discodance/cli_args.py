"""Parsing the command line's values: number types, axes, --pick, horizons and per-model --set
pairs. Each problem is an argparse error (one line, exit code 2) or a DiscodanceError."""
from __future__ import annotations

import argparse
import math

from .config import parse_overrides
from .errors import DiscodanceError, require
from .model_names import MODELS


def number(kind, low, high=None, inclusive=True):
    """An argparse type: a `kind` number in [low, high] (or (low, high] when not inclusive), finite."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {'whole number' if kind is int else 'number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (value == low and not inclusive) or (high is not None and value > high):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and <= {high}' if high is not None else ''}, "
                                             f"got {value}")
        return value
    return parse


def up_axis(text: str) -> str:
    """An argparse type: x, y, z with an optional sign -> '+z', '-y', ..."""
    from .data.skeleton import parse_up
    try:
        return parse_up(text)
    except DiscodanceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class PickAction(argparse.Action):
    """--pick RULE [NUMBERS]: one word (moving, point:X,Y) or two (point X,Y), checked at once."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .data.pick import parse_pick
        need = 2 if values[0].lower() in ("point", "box") else 1
        if len(values) > need:
            parser.error(f"--pick {' '.join(values[:need])} is followed by {values[need]!r}; "
                         "give the sources before --pick")
        try:
            setattr(namespace, self.dest, parse_pick(values))
        except DiscodanceError as e:
            parser.error(str(e))


positive_int = number(int, 1)
positive_float = number(float, 0, inclusive=False)
nonneg_float = number(float, 0)
seed = number(int, 0, 2 ** 63 - 1)


def model_sets(pairs: list[str] | None) -> dict[str, dict[str, str]]:
    """['gan:noise=8', 'vrnn:latent=4'] -> {'gan': {'noise': '8'}, 'vrnn': {'latent': '4'}}."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs or []:
        model, sep, setting = pair.partition(":")
        require(sep and "=" in setting, f"--set expects MODEL:key=value, got {pair!r}")
        out.setdefault(model.strip(), {}).update(parse_overrides([setting]))
    return out


def split_train_sets(pairs: list[str] | None) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """--train-set key=value (every run) and MODEL:key=value (that model's runs) apart."""
    shared = [p for p in pairs or [] if p.partition("=")[0].partition(":")[0] not in MODELS]
    own = [p for p in pairs or [] if p not in shared]
    return parse_overrides(shared), model_sets(own)


def horizons(text: str) -> tuple[int, ...]:
    """'16,64,256' -> (16, 64, 256): rollout lengths at which quality is measured."""
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if not values or values[0] < 4 or values[-1] > 100_000:
        raise argparse.ArgumentTypeError(f"horizons must be within 4 .. 100000 frames, got {text!r}")
    return values
