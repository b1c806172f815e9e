"""Videos and learning curves: render a policy to frames, write GIF/MP4, plot ``episodes.csv``.

    python main.py --record runs/<run>/checkpoints/final.pt --output after.gif   (the entry scripts record checkpoints)

Importing this package does not import matplotlib; :func:`plot_learning_curve` loads it when called.
"""

from __future__ import annotations

from typing import Any

from videos.capture import capture_training_videos
from videos.render import Recording, make_render_env, record_episodes
from videos.writers import (read_frames, side_by_side, write_gif, write_mp4, write_side_by_side_gif,
                            write_video)

__all__ = ["Recording", "capture_training_videos", "make_render_env", "plot_learning_curve", "read_frames",
           "record_episodes", "side_by_side", "write_gif", "write_mp4", "write_side_by_side_gif",
           "write_video"]


def __getattr__(name: str) -> Any:
    if name == "plot_learning_curve":
        from videos.curves import plot_learning_curve
        return plot_learning_curve
    raise AttributeError(f"module 'videos' has no attribute {name!r}")
