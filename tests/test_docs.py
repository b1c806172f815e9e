"""The generated documents match the code they describe: docs/flags.md the argument parsers, docs/presets.md
ppo/presets.toml (regenerate both with ``python -m benchmarks.flags``), docs/results.md the run records; and
the scripts that write them (benchmarks.results, benchmarks.diagnose, benchmarks.compare) do what they say."""

from __future__ import annotations

import argparse
import json

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


def _fake_run(run_dir, config, mean_return, wall_time_s=12.5):
    """A run directory as a finished run leaves it: config.json, metrics.csv and evaluation.json."""
    import json
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "evaluation.json").write_text(json.dumps({"mean_return": mean_return, "std_return": 1.0,
                                                         "episodes": 10}))
    (run_dir / "metrics.csv").write_text("iteration,global_step,wall_time_s,sps\n1,64,1.0,64\n"
                                         f"2,99968,{wall_time_s},8000\n")


def test_results_collect_and_render_keep_only_todays_preset(tmp_path, monkeypatch):
    import dataclasses
    import json
    from benchmarks import results
    from ppo.config import resolve_config
    from ppo.presets import presets_for
    monkeypatch.setattr(results, "detect_family", lambda environment_id: "discrete")
    monkeypatch.setattr(results, "RESULTS_PATH", tmp_path / "results.md")
    preset = resolve_config({"environment_id": "CartPole-v1"},
                            *(values for _, values in presets_for("CartPole-v1", "discrete")))
    current = dataclasses.asdict(preset)
    records = tmp_path / "records"
    for seed, mean in ((1, 500.0), (2, 480.0), (3, 490.0)):
        _fake_run(tmp_path / f"run{seed}", {**current, "seed": seed, "run_name": f"run{seed}"}, mean)
    replaced = {**current, "seed": 4, "num_epochs": current["num_epochs"] + 1}  # another preset
    _fake_run(tmp_path / "run4", replaced, 100.0)
    paths = results.collect([tmp_path / f"run{seed}" for seed in (1, 2, 3, 4)], records)
    assert len(paths) == 4 and len({path.name for path in paths}) == 4
    record = json.loads(paths[0].read_text())
    assert record["training"] == {"global_step": 99968, "wall_time_s": 12.5}
    current_records, stale = results.classify(results.load_records(records))
    assert sorted(r["seed"] for r in current_records) == [1, 2, 3]
    assert [path.name for path in stale] == [paths[3].name]
    table = results.readme_table(current_records)
    assert "| CartPole-v1 |" in table and "| 1-3 | 490.0 (480.0) |" in table
    text = results.results_markdown(current_records, records)
    assert "100.0" not in text and "480.0 (seed 2)" in text


def test_target_verdict_reads_median_and_worst_against_the_published_return():
    from benchmarks import results
    # CartPole-v1: 500 at 100k (RL Zoo); the worst seed needs 350
    assert results.target_verdict("CartPole-v1", 500.0, 351.0, 100_000) == "met"
    assert results.target_verdict("CartPole-v1", 499.0, 351.0, 100_000) == "no: median < 500"
    assert results.target_verdict("CartPole-v1", 500.0, 349.0, 100_000) == "no: worst < 350"
    assert results.target_verdict("CartPole-v1", 500.0, 500.0, 200_000) == ""  # another budget: not comparable
    # Pendulum-v1: -172 is a cost; the worst seed may cost at most -172 / 0.7 = -245.7
    assert results.target_verdict("Pendulum-v1", -170.0, -240.0, 100_000) == "met"
    assert results.target_verdict("Pendulum-v1", -175.0, -250.0, 100_000) == "no: median < -172, worst < -246"


def test_diagnose_plots_runs_and_names_the_flags_that_differ_from_the_preset(tmp_path):
    from benchmarks import diagnose
    from tests.conftest import run_cli
    result = run_cli("main.py", "--environment-id", "Pendulum-v1", "--seed", "3", "--gae-gamma", "0.9",
                     "--total-timesteps", "4096", "--eval-episodes", "1", "--no-progress",
                     "--output-dir", str(tmp_path), "--run-name", "short")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "short"
    output = diagnose.plot([run_dir], tmp_path / "figures" / "P.png", note="a note")
    assert output.stat().st_size > 0
    description = json.loads(output.with_suffix(".json").read_text())
    assert description["note"] == "a note"
    # the preset's gamma is 0.95, so 0.9 and the shorter budget are the only flags the run needs besides the seed
    assert description["runs"][0]["command"] == ("python main.py --environment-id Pendulum-v1 --seed 3 "
                                                 "--run-name short --total-timesteps 4096 --gae-gamma 0.9")
    assert description["runs"][0]["evaluation"] == json.loads((run_dir / "evaluation.json").read_text())["mean_return"]
