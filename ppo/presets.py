"""Per-family and per-environment default hyperparameters, kept as data in ``presets.toml``."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any

PRESETS_PATH = Path(__file__).with_name("presets.toml")


def load_presets(path: Path = PRESETS_PATH) -> dict[str, Any]:
    """The parsed ``presets.toml``: ``{"family": {...}, "environment": {...}}``."""
    with path.open("rb") as handle:
        return tomllib.load(handle)


def presets_for(environment_id: str, family: str) -> list[tuple[str, dict[str, Any]]]:
    """The presets that apply to ``environment_id``, lowest precedence first, as ``(source, values)``.

    ``values`` holds only :class:`ppo.config.PPOConfig` field names; ``source`` is the text to print.
    """
    data = load_presets()
    found = []
    for table in (data.get("family", {}).get(family), data.get("environment", {}).get(environment_id)):
        if table:
            values = {key: value for key, value in table.items() if key != "source"}
            found.append((table.get("source", "presets.toml"), values))
    return found


def published_result(environment_id: str) -> dict[str, Any] | None:
    """The published PPO result for ``environment_id``: ``{"steps", "mean_return", "source"}``, or None."""
    return load_presets().get("published", {}).get(environment_id)


def describe_presets(width: int = 100) -> str:
    """A readable listing of every preset, for ``--list-presets``: per preset its name, its source wrapped to
    ``width`` characters, and one ``key = value`` line per value."""
    data = load_presets()
    lines = []
    for kind in ("family", "environment"):
        for name, table in data.get(kind, {}).items():
            lines.append(f"{kind} {name}")
            lines.extend(textwrap.wrap(f"source: {table.get('source', '')}", width, initial_indent="    ",
                                       subsequent_indent="        "))
            lines.extend(f"    {key} = {value}" for key, value in table.items() if key != "source")
    return "\n".join(lines)
