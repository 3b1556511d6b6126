"""Training recipes are files: read with flags overriding, checked for typos, and written back
resolved so that feeding the file back gives the same run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from train.__main__ import parse_args
from train.recipe import NOT_RECIPE, write_resolved

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "recipes" / "all-pbs-cnn-3.toml"


def test_the_resolved_recipe_round_trips(tmp_path):
    first = parse_args(["--recipe", str(SHIPPED), "--out", str(tmp_path), "--seed", "7"])
    assert first.epochs == 150 and first.magnification == [0.5, 2.0] and first.seed == 7
    write_resolved(first, tmp_path, "test")
    again = parse_args(["--recipe", str(tmp_path / "recipe.toml"), "--out", str(tmp_path)])
    strip = lambda ns: {k: v for k, v in vars(ns).items() if k not in NOT_RECIPE}  # noqa: E731
    assert strip(again) == strip(first)


def test_flags_override_the_recipe_and_typos_are_refused(tmp_path):
    args = parse_args(["--recipe", str(SHIPPED), "--out", "x", "--epochs", "3"])
    assert args.epochs == 3
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 10\nlearning_rate = 0.1\n")
    with pytest.raises(SystemExit):
        parse_args(["--recipe", str(bad), "--out", "x"])


def test_paths_in_a_recipe_become_paths(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'data = "{tmp_path}"\n')
    args = parse_args(["--recipe", str(recipe), "--out", "x"])
    assert isinstance(args.data, Path) and args.data == tmp_path
    assert isinstance(args, argparse.Namespace)
