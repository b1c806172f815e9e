"""Write frame sequences as GIF or MP4 (imageio; MP4 through imageio-ffmpeg's H.264), atomically.

Every writer takes ``frames`` as a sequence of ``[H, W, 3]`` uint8 RGB arrays of one size, writes to a
temporary file next to ``path`` and renames it, so a reader never sees half a video.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from common.files import atomic_write
from videos.render import put_label

VIDEO_SUFFIXES = (".gif", ".mp4")


def _check_frames(frames: Sequence[np.ndarray]) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError("no frames to write")
    array = np.stack([np.asarray(frame) for frame in frames])
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"frames must be [H, W, 3] uint8 RGB images, got {array.shape[1:]} {array.dtype}")
    return array


def write_gif(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """Write an endlessly looping GIF.

    Args:
        path: the output file (parent directories are created).
        frames: ``N`` images ``[H, W, 3]`` uint8.
        fps: frames per second; GIF stores delays in 1/100 s, so rates above 50 play at 50 at best.

    Returns:
        ``path``.

    Raises:
        ValueError: no frames, or frames that are not ``[H, W, 3]`` uint8 of one size.
        OSError: the file cannot be written.
    """
    import imageio.v3 as iio

    array = _check_frames(frames)
    duration_ms = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    # encoded in memory, then written with plain file writes: a full disk is one OSError (imageio's own file
    # handling would fail once more in a destructor, with a traceback on stderr)
    data = iio.imwrite("<bytes>", array, extension=".gif", duration=duration_ms, loop=0)
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """Write an H.264 MP4 (yuv420p, plays in browsers) with the ffmpeg that imageio-ffmpeg ships.

    Odd frame sizes are padded with black to even ones (yuv420p needs even sizes).

    Args:
        path: the output file (parent directories are created).
        frames: ``N`` images ``[H, W, 3]`` uint8.
        fps: frames per second.

    Returns:
        ``path``.

    Raises:
        ValueError: no frames, or frames that are not ``[H, W, 3]`` uint8 of one size.
        OSError: the file cannot be written (or ffmpeg fails).
    """
    import imageio.v2 as imageio

    array = _check_frames(frames)
    _, height, width, _ = array.shape
    if height % 2 or width % 2:
        array = np.pad(array, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))

    def write(temporary: str) -> None:
        writer = imageio.get_writer(temporary, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="quiet")
        try:
            for frame in array:
                writer.append_data(frame)
        finally:
            writer.close()
        _check_mp4(temporary)

    return atomic_write(path, write)


def _check_mp4(path: str | os.PathLike) -> None:
    """Raise OSError unless ``path`` is a whole MP4: top-level boxes that add up to the file, a ``moov`` among
    them. ffmpeg that cannot write (disk full) ends without an error imageio would report, leaving a file cut
    short."""
    size = os.path.getsize(path)
    offset, boxes = 0, set()
    with open(path, "rb") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1 and len(header) == 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if length < 8:
                break
            boxes.add(kind)
            offset += length
    if offset != size or b"moov" not in boxes:
        full = os.statvfs(os.path.dirname(os.path.abspath(path))).f_bavail == 0
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, f"{os.strerror(code)} (ffmpeg could not finish the MP4)", str(path))


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float = 30.0) -> Path:
    """:func:`write_gif` or :func:`write_mp4`, chosen by the suffix of ``path``.

    Raises:
        ValueError: a suffix other than ``.gif`` and ``.mp4``, or bad frames.
        OSError: the file cannot be written.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix == ".mp4":
        return write_mp4(path, frames, fps)
    raise ValueError(f"cannot write '{path}': the video file name must end in .gif or .mp4")


def read_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """The frames of a GIF or MP4 as ``[H, W, 3]`` uint8 RGB arrays.

    Raises:
        OSError: the file is missing or unreadable.
    """
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import imageio.v2 as imageio
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            return [np.asarray(frame)[:, :, :3] for frame in reader]
        finally:
            reader.close()
    try:
        array = iio.imread(path, index=None, mode="RGB")
    except (ValueError, SyntaxError) as error:
        raise OSError(f"cannot read '{path}': {error}") from error
    return list(array.reshape(-1, *array.shape[-3:]))


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray],
                 labels: tuple[str, str] = ("before", "after"), gap: int = 4) -> list[np.ndarray]:
    """Put two frame sequences next to each other, each half labelled in its bottom left corner.

    The shorter sequence is padded by repeating its last frame; frames of different heights are padded
    with black at the bottom. Between the halves lies a white ``gap`` pixels wide.

    Args:
        left, right: ``N1`` and ``N2`` images ``[H1, W1, 3]`` and ``[H2, W2, 3]`` uint8.
        labels: the texts of the left and right half.

    Returns:
        ``max(N1, N2)`` images ``[max(H1, H2), W1 + gap + W2, 3]`` uint8 (``gap`` rounded up so the width
        stays even when ``W1 + W2`` is even).

    Raises:
        ValueError: an empty sequence.
    """
    if len(left) == 0 or len(right) == 0:
        raise ValueError("both frame sequences need at least one frame")
    count = max(len(left), len(right))
    height = max(np.asarray(left[0]).shape[0], np.asarray(right[0]).shape[0])
    gap += gap % 2

    def pad(frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)[:, :, :3]
        return np.pad(frame, ((0, height - frame.shape[0]), (0, 0), (0, 0)))

    combined = []
    for index in range(count):
        first = put_label(pad(left[min(index, len(left) - 1)]), labels[0], corner="bottom")
        second = put_label(pad(right[min(index, len(right) - 1)]), labels[1], corner="bottom")
        separator = np.full((height, gap, 3), 255, dtype=np.uint8)
        combined.append(np.concatenate([first, separator, second], axis=1))
    return combined


def write_side_by_side_gif(path: str | os.PathLike, left: Sequence[np.ndarray], right: Sequence[np.ndarray],
                           fps: float = 30.0, labels: tuple[str, str] = ("before", "after")) -> Path:
    """Write :func:`side_by_side` of ``left`` and ``right`` as a looping GIF (labels "before"/"after").

    Args:
        path: the output file.
        left, right: ``[H, W, 3]`` uint8 frame sequences of any lengths (the shorter one holds its last
            frame).
        fps: frames per second.
        labels: the texts of the left and right half.

    Returns:
        ``path``.

    Raises:
        ValueError: an empty sequence.
        OSError: the file cannot be written.
    """
    return write_gif(path, side_by_side(left, right, labels), fps)
