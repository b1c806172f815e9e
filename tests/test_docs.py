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


def test_results_document_and_readme_table_match_the_records():
    from benchmarks import results
    current, _stale = results.classify(results.load_records())
    command = "python -m benchmarks.results render --readme README.md"
    assert results.RESULTS_PATH.read_text() == results.results_markdown(current), (
        f"docs/results.md no longer matches docs/results/records/ and today's presets; regenerate it with: "
        f"{command}")
    readme = (results.ROOT / "README.md").read_text()
    assert results.readme_block(readme) == results.readme_table(current), (
        f"the README's results table no longer matches the records; regenerate it with: {command}")


def test_compare_markdown_sections_replace_only_their_own(tmp_path):
    from benchmarks import compare
    target = tmp_path / "performance.md"
    compare.write_markdown_section(str(target), "speed", "## Steps per second\n\nALPHA-ONE\n")
    compare.write_markdown_section(str(target), "time-to-score CartPole-v1", "## Time\n\nBETA-SEEDS\n")
    compare.write_markdown_section(str(target), "speed", "## Steps per second\n\nALPHA-TWO\n")
    text = target.read_text()
    assert text.startswith(compare.PERFORMANCE_HEADER)
    assert "ALPHA-TWO" in text and "ALPHA-ONE" not in text and "BETA-SEEDS" in text
    assert text.index("ALPHA-TWO") < text.index("BETA-SEEDS")  # a replaced section keeps its place


def test_compare_speed_table_has_every_repeat_median_spread_and_ratio():
    from benchmarks import compare
    run = {"env_s": 1.0, "inference_s": 0.5, "update_s": 0.7, "total_s": 2.5, "peak_mib": 300.0}
    ours = [{**run, "sps": value} for value in (4000.0, 5000.0, 4500.0)]
    theirs = [{"sps": value, "peak_mib": 280.0} for value in (1000.0, 1250.0, 1100.0)]
    args = argparse.Namespace(use_gpu=False, compile=False)
    params = dict(num_envs=1, num_steps=2048, epochs=10, minibatches=32)
    text = compare.speed_markdown([("Hopper-v4", params, 8192, ours, theirs)], args)
    row = next(line for line in text.splitlines() if line.startswith("| Hopper-v4"))
    assert "4,000, 5,000, 4,500" in row and "4,500 (4,000-5,000)" in row
    assert "1,000, 1,250, 1,100" in row and "1,100 (1,000-1,250)" in row
    assert "4.09x (4.00-4.09)" in row
