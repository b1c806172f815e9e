"""The generated documents match the code they describe: docs/flags.md the argument parsers, docs/presets.md
ppo/presets.toml. Regenerate both with ``python -m benchmarks.flags``."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import flags


@pytest.mark.parametrize("path", [flags.FLAGS_PATH, flags.PRESETS_PATH], ids=lambda path: path.name)
def test_generated_document_matches_the_code(path):
    expected = flags.documents()[path]
    assert path.exists(), f"{path.name} is missing; write it with: {flags.COMMAND}"
    current = path.read_text()
    assert current == expected, (f"docs/{path.name} no longer matches the code; regenerate it with: "
                                 f"{flags.COMMAND}")


def test_flags_document_names_every_option_of_every_parser():
    text = flags.flags_markdown()
    for entry in flags._entries():
        parser = flags._build_parser(entry)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            for option in action.option_strings:
                assert f"`{option}`" in text, f"{entry.script}: {option} is missing from docs/flags.md"


def test_check_mode_reports_a_stale_document(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "flags.md"
    stale.write_text("# Flags\n\nout of date\n")
    monkeypatch.setattr(flags, "FLAGS_PATH", stale)
    monkeypatch.setattr(flags, "PRESETS_PATH", tmp_path / "presets.md")
    monkeypatch.setattr(flags, "ROOT", tmp_path)
    assert flags.main(["--check"]) == 1
    assert flags.COMMAND in capsys.readouterr().err
    assert flags.main([]) == 0
    assert flags.main(["--check"]) == 0
