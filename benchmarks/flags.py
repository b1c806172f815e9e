"""Write ``docs/flags.md`` from the argument parsers of ``main.py`` and ``main_atari.py``, and
``docs/presets.md`` from ``ppo/presets.toml``.

    python -m benchmarks.flags            # rewrite docs/flags.md and docs/presets.md
    python -m benchmarks.flags --check    # exit 1 if either file differs from what the code gives

Nothing here names a flag: the tables come from walking the parsers' argument groups, so a changed
parser changes the document (and ``tests/test_docs.py`` fails until it is regenerated).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FLAGS_PATH = ROOT / "docs" / "flags.md"
PRESETS_PATH = ROOT / "docs" / "presets.md"
COMMAND = "python -m benchmarks.flags"
ENTRY_MODULES = ("main", "main_atari")
# "(default: X)" at the end of a help text: the default goes to its own column.
_BASE_DEFAULT = re.compile(r"\s*\((?:base )?default: (?P<value>[^()]*)\)\s*$")


def _cell(text: Any) -> str:
    """A markdown table cell: pipes escaped, newlines and runs of spaces folded."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _entries() -> list[Any]:
    """The ``EntryPoint`` of each entry script, in :data:`ENTRY_MODULES` order."""
    import importlib
    return [importlib.import_module(name).ENTRY for name in ENTRY_MODULES]


def _build_parser(entry: Any) -> argparse.ArgumentParser:
    from ppo.cli import build_parser
    return build_parser(entry)


def _config_defaults() -> dict[str, Any]:
    """Field name -> dataclass default of the config, where the config module can be read."""
    try:
        from ppo.config import PPOConfig
    except ImportError:
        return {}
    return {f.name: f.default for f in dataclasses.fields(PPOConfig)
            if f.default is not dataclasses.MISSING}


def _flag_names(action: argparse.Action) -> tuple[list[str], list[str]]:
    """``(names, aliases)``: the flag and, for ``BooleanOptionalAction``, its ``--no-`` form; then the rest."""
    strings = list(action.option_strings)
    if not strings:
        return [action.metavar or action.dest], []
    negative = {s for s in strings if s.startswith("--no-")}
    positive = [s for s in strings if s not in negative]
    primary = positive[0] if positive else strings[0]
    names = [primary]
    if "--no-" + primary[2:] in negative:
        names.append("--no-" + primary[2:])
    aliases = [s for s in positive[1:]]
    aliases += [s for s in negative if s not in names]
    return names, aliases


def _takes(action: argparse.Action) -> str:
    """What the flag takes: its choices, its metavar or its type's name; empty for switches."""
    if action.nargs == 0:
        return ""
    if action.choices:
        return " | ".join(f"`{choice}`" for choice in action.choices)
    if action.metavar:
        return _code(str(action.metavar))
    kind = getattr(action.type, "__name__", None)
    if kind in ("int", "float", "str"):
        return kind.upper()
    return action.dest.upper()  # as argparse's usage line names it


def _default_and_help(action: argparse.Action, formatter: argparse.HelpFormatter,
                      defaults: dict[str, Any]) -> tuple[str, str]:
    help_text = formatter._expand_help(action) if action.help else ""  # noqa: SLF001 - argparse's own expansion
    default: Any = action.default
    match = _BASE_DEFAULT.search(help_text)
    if match:
        help_text = help_text[:match.start()]
    if default is argparse.SUPPRESS or default is None:
        if action.dest in defaults:
            default = defaults[action.dest]
        elif match:
            default = match.group("value")
        else:
            default = None
    if action.nargs == 0 and default is False and action.dest not in defaults:
        default = None  # a plain switch (store_true action): off unless given
    return ("" if default is None else _code(str(default))), help_text


def _group_rows(parser: argparse.ArgumentParser) -> list[tuple[str, list[tuple[str, ...]]]]:
    """``[(group title, rows)]`` for every argument group with arguments, in the parser's order."""
    formatter = parser._get_formatter()  # noqa: SLF001
    defaults = _config_defaults()
    groups = []
    for group in parser._action_groups:  # noqa: SLF001 - argparse keeps no public list of its groups
        rows = []
        for action in group._group_actions:  # noqa: SLF001
            if isinstance(action, argparse._HelpAction):  # noqa: SLF001
                continue
            if action.help == argparse.SUPPRESS:
                continue
            names, aliases = _flag_names(action)
            default, help_text = _default_and_help(action, formatter, defaults)
            rows.append((" / ".join(_code(name) for name in names), ", ".join(_code(a) for a in aliases),
                         _takes(action), default, help_text))
        if rows:
            groups.append((group.title or "Arguments", rows))
    return groups


def _table(rows: Iterable[tuple[str, ...]]) -> list[str]:
    lines = ["| flag | alias | takes | default | meaning |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def flags_markdown() -> str:
    """The text of ``docs/flags.md``: one table per argument group of each entry script's parser; a later
    script's groups that are the same as the first script's are named, not repeated."""
    lines = ["# Flags", "",
             f"Generated from the argument parsers by `{COMMAND}`; `tests/test_docs.py` fails when this file no",
             "longer matches them. `python main.py --help` prints the same. Boolean flags have a `--no-` form;",
             "values are applied lowest precedence first: the defaults below, the presets of the environment",
             "([presets.md](presets.md), `--list-presets`), then the flags given.", ""]
    first_groups: dict[str, list[tuple[str, ...]]] | None = None
    first_script = ""
    for entry in _entries():
        parser = _build_parser(entry)
        groups = _group_rows(parser)
        lines += [f"## `{entry.script}`", ""]
        if parser.description:
            lines += [_cell(parser.description), ""]
        default_id = getattr(entry, "default_environment_id", None)
        if default_id:
            lines += [f"Without `--environment-id` it trains `{default_id}`.", ""]
        if first_groups is None:
            first_groups, first_script = dict(groups), entry.script
            for title, rows in groups:
                lines += [f"### {title}", "", *_table(rows), ""]
            continue
        same = [title for title, rows in groups if first_groups.get(title) == rows]
        if same:
            lines += [f"The same as `{first_script}`: {', '.join(same)}.", ""]
        for title, rows in groups:
            if title in same:
                continue
            lines += [f"### {title}", "", *_table(rows), ""]
    return "\n".join(lines).rstrip() + "\n"


def presets_markdown() -> str:
    """The text of ``docs/presets.md``: every preset of ``ppo/presets.toml`` with its values and source."""
    from ppo.presets import load_presets
    data = load_presets()
    lines = ["# Presets", "",
             f"Generated from `ppo/presets.toml` by `{COMMAND}` (`python main.py --list-presets` prints the",
             "same). A run takes the base defaults ([flags.md](flags.md)), then its family preset (`discrete`,",
             "`continuous` or `atari`, from the action space), then the environment's own preset; a flag given",
             "on the command line always wins.", ""]
    titles = {"family": "Family presets", "environment": "Environment presets"}
    for kind in ("family", "environment"):
        tables = data.get(kind, {})
        if not tables:
            continue
        lines += [f"## {titles[kind]}", ""]
        for name, table in tables.items():
            values = {key: value for key, value in table.items() if key != "source"}
            lines += [f"### `{name}`", "", _cell(table.get("source", "")), ""]
            if values:
                lines += ["| flag | value |", "|---|---|"]
                lines += [f"| `--{key.replace('_', '-')}` | `{_cell(value)}` |" for key, value in values.items()]
            else:
                lines += ["No values of its own: the family preset applies."]
            lines.append("")
    published = data.get("published", {})
    if published:
        lines += ["## Published PPO results", "",
                  "Printed beside a run's final evaluation and listed in [results.md](results.md).", "",
                  "| environment | steps | mean return | source |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {entry.get('steps', ''):,} | {entry.get('mean_return', '')} | "
                  f"{_cell(entry.get('source', ''))} |" for name, entry in published.items()]
    return "\n".join(lines).rstrip() + "\n"


def documents() -> dict[Path, str]:
    """Path -> the text the code gives for it."""
    return {FLAGS_PATH: flags_markdown(), PRESETS_PATH: presets_markdown()}


def stale_documents() -> list[tuple[Path, str]]:
    """``[(path, unified diff)]`` of the documents whose committed text differs from the generated one."""
    stale = []
    for path, text in documents().items():
        current = path.read_text() if path.exists() else ""
        if current != text:
            diff = "".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                str(path.relative_to(ROOT)), "generated", n=1))
            stale.append((path, diff))
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a document is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_documents()
        for path, diff in stale:
            print(f"{path.relative_to(ROOT)} does not match the code; regenerate it with: {COMMAND}\n{diff}",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in documents().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
