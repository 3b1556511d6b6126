"""Every option of every command says what it does, and one concept has one option name."""

from __future__ import annotations

import click

from edge_infer.cli import main


def commands() -> dict[str, click.Command]:
    return dict(main.commands)


def test_every_option_has_help():
    missing = [
        f"{name} {opt.opts[0]}"
        for name, cmd in commands().items()
        for opt in cmd.params
        if isinstance(opt, click.Option) and not (opt.help or "").strip()
    ]
    assert not missing, f"options without help: {missing}"


#: the same flag, on purpose, for a different value: check-site's --json names the file to
#: write beside its report, info's and bench's print JSON instead of text
SAME_FLAG_OTHER_VALUE = {("check-site", "--json")}


def test_one_name_per_concept():
    """An option spelled the same way means the same thing in every command."""
    seen: dict[str, str] = {}
    for name, cmd in commands().items():
        for opt in cmd.params:
            if isinstance(opt, click.Option):
                for flag in opt.opts:
                    if (name, flag) in SAME_FLAG_OTHER_VALUE:
                        continue
                    seen.setdefault(flag, opt.name)
                    assert seen[flag] == opt.name, flag
    assert "--batch" not in seen and "--batch-size" in seen


def test_watch_needs_an_explicit_results_file():
    """Under a service manager the working folder is `/`: no silent default there."""
    results = next(p for p in commands()["watch"].params if p.name == "results")
    assert results.required
