"""DM Control without a display: no GLFW "DISPLAY environment variable is missing" warning and no absl
"settotalmass is deprecated" lines, while the user's MUJOCO_GL and other absl warnings are kept."""

import ctypes.util
import logging
import os
import subprocess
import sys

import gymnasium as gym
import pytest

from tests.conftest import ROOT
from wrappers import quiet
from wrappers.vector import register_namespace


def headless_environment(**extra):
    env = {key: value for key, value in os.environ.items() if key not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, **extra}


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("EGL"),
                    reason="needs Linux with libEGL")
def test_headless_gl_default_sets_egl_only_when_unset_without_a_display(monkeypatch):
    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert quiet.headless_gl_default() == "egl" and os.environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert quiet.headless_gl_default() is None and os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")
    assert quiet.headless_gl_default() is None and "MUJOCO_GL" not in os.environ


@pytest.mark.skipif(not ctypes.util.find_library("EGL"), reason="needs libEGL")
def test_dm_control_imports_without_glfw_warning_when_no_display_is_set():
    code = ("from wrappers.vector import register_namespace; register_namespace('dm_control/walker-walk-v0'); "
            "import os; print(os.environ['MUJOCO_GL'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=headless_environment())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "egl"
    assert "DISPLAY" not in result.stderr and "GLFW" not in result.stderr, result.stderr


def test_settotalmass_deprecation_is_dropped_and_other_absl_warnings_kept(caplog):
    register_namespace("dm_control/cheetah-run-v0")  # installs the filter
    absl_logger = logging.getLogger("absl")
    filters = [existing for existing in absl_logger.filters if isinstance(existing, quiet._DropMessages)]
    assert len(filters) == 1
    with caplog.at_level(logging.WARNING):
        absl_logger.removeFilter(filters[0])
        try:
            gym.make("dm_control/cheetah-run-v0").close()  # cheetah.xml has <compiler settotalmass=...>
        finally:
            quiet.quiet_third_party_logs()
        unfiltered = caplog.text
        caplog.clear()
        gym.make("dm_control/cheetah-run-v0").close()
        absl_logger.warning("another absl warning")
    assert "settotalmass" in unfiltered  # the warning this filter exists for is still emitted upstream
    assert "settotalmass" not in caplog.text and "another absl warning" in caplog.text
