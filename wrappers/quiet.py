"""Quiet third-party start-up noise that tells the user nothing: a headless GL default for MuJoCo and
DM Control, and a filter for dm_control's own deprecated model attributes.

Both are applied when :mod:`wrappers` is imported, before any environment package (mujoco, dm_control,
shimmy) is: ``MUJOCO_GL`` is read when dm_control is imported and when a render context is made.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys

# MuJoCo messages that dm_control's own suite models trigger (cheetah.xml, ...; dm_control logs MuJoCo's
# warnings through absl): the user can do nothing about them.
QUIET_ABSL_MESSAGES = ("compiler attribute 'settotalmass' is deprecated",)


def headless_gl_default() -> str | None:
    """Set ``MUJOCO_GL=egl`` when it is unset, there is no display (``DISPLAY``/``WAYLAND_DISPLAY``) and the
    EGL library is installed; ``osmesa`` when only OSMesa is. Without it dm_control tries GLFW first, which
    prints "X11: The DISPLAY environment variable is missing" (GLFWError) on every import, then falls back
    to EGL anyway. A ``MUJOCO_GL`` the user set is kept. Returns the value set, or None."""
    if "MUJOCO_GL" in os.environ or not sys.platform.startswith("linux"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return backend
    return None  # no headless library: dm_control picks what it can, as before


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party_logs() -> None:
    """Drop the absl log lines of :data:`QUIET_ABSL_MESSAGES` (idempotent). Other absl warnings still show."""
    logger = logging.getLogger("absl")
    if not any(isinstance(existing, _DropMessages) for existing in logger.filters):
        logger.addFilter(_DropMessages(QUIET_ABSL_MESSAGES))
