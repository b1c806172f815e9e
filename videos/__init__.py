"""Videos and learning curves: render a policy to frames, write GIF/MP4, plot ``episodes.csv``.

    python main.py --record runs/<run>/checkpoints/final.pt --output after.gif   (the entry scripts record checkpoints)

Importing this package imports none of its modules (cv2, imageio, matplotlib): each name is loaded on first
use, and :func:`plot_learning_curve` loads matplotlib when called.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> module; loaded on first use, so that ``videos.curves`` (matplotlib) does not bring cv2 and imageio
_EXPORTS = {"Recording": "videos.render", "make_render_env": "videos.render", "record_episodes": "videos.render",
            "capture_training_videos": "videos.capture", "plot_learning_curve": "videos.curves",
            **{name: "videos.writers" for name in ("read_frames", "side_by_side", "write_gif", "write_mp4",
                                                   "write_side_by_side_gif", "write_video")}}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'videos' has no attribute {name!r}")
