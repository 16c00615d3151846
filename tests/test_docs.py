"""The generated references (docs/configuration.md, docs/cli.md) are what tools/gen_docs.py
writes from today's config docstrings and argparse parsers: a change to either without
`make docs` fails here, naming the file."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import REPO_ROOT


def gen_docs():
    # tools/ is not a package (the generator is not shipped); load it by path.
    spec = importlib.util.spec_from_file_location("gen_docs", REPO_ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", ["docs/configuration.md", "docs/cli.md"])
def test_generated_reference_is_up_to_date(path):
    expected = gen_docs().GENERATED[path]()
    committed = REPO_ROOT / path
    assert committed.exists(), f"{path} is missing: run `make docs`"
    assert committed.read_text() == expected, f"{path} is out of date: run `make docs` and commit the result"


def test_check_mode_names_a_stale_file(tmp_path, monkeypatch, capsys):
    module = gen_docs()
    monkeypatch.setattr(module, "ROOT", tmp_path)  # an empty checkout: both files missing
    assert module.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "docs/configuration.md is out of date: run `make docs`" in err and "docs/cli.md" in err
    assert module.main([]) == 0 and module.main(["--check"]) == 0  # written, then current


def test_cli_reference_lists_every_option():
    import argparse

    import aunet.cli
    import aunet.segment.cli

    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    parsers = [aunet.segment.cli.build_parser(), *(b() for b in aunet.segment.cli.SUBCOMMAND_PARSERS.values())]
    top = aunet.cli.build_parser()
    parsers += [p for a in top._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
    options = {o for p in parsers for a in p._actions for o in a.option_strings
               if a.help != argparse.SUPPRESS and o not in ("-h", "--help")}
    assert options and not [o for o in options if f"`{o}" not in text]
