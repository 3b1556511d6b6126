"""Training recipes as files: `python -m train --recipe recipes/X.toml`, CLI flags override.

A recipe is a flat TOML table whose keys are the long options of `python -m train` with
underscores (`input_size = 160`). Every run writes its resolved recipe (`recipe.toml`: every
option, the recipe's and the flags' alike) so that feeding the file back reproduces the run;
metrics.json records the same values.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import tomllib

RECIPE_FILE = "recipe.toml"
#: options that say where a run goes or how it is resumed, not what it trains
NOT_RECIPE = ("recipe", "out", "resume")


def read_recipe(path: Path, parser: argparse.ArgumentParser) -> dict:
    """The recipe's options, checked against the parser's: an unknown key is an error (a typo
    in a recipe must not silently train the default)."""
    with open(path, "rb") as fh:
        table = tomllib.load(fh)
    known = {a.dest for a in parser._actions} - set(NOT_RECIPE)
    unknown = sorted(set(table) - known)
    if unknown:
        parser.error(f"{path}: unknown recipe key(s) {', '.join(unknown)}")
    return table


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"recipe value {v!r} is not finite")
        return repr(v)
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def resolved(args: argparse.Namespace) -> dict:
    """Every option of the run except where it goes; None (unset) options are left out, so
    the default applies when the file is read back."""
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in sorted(vars(args).items())
        if k not in NOT_RECIPE and v is not None
    }


def to_toml(values: dict, header: str = "") -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_resolved(args: argparse.Namespace, out: Path, command: str) -> dict:
    values = resolved(args)
    (out / RECIPE_FILE).write_text(
        to_toml(values, f"resolved recipe of this run; made by: {command}"), encoding="utf-8"
    )
    return values
