"""Where frames come from: a camera, a video file, or a list of frames, each at its own rate.

    --camera [N]  picamera2 (a Pi camera module) if installed, ─┐
                  else OpenCV V4L2 /dev/videoN                  │
    --video FILE  OpenCV, paced to the file's own frame rate    ├─► FrameSource.frames(stop)
                  (a file plays like a camera)                  │    RGB uint8 (H, W, 3),
    FrameList     frames in memory at a set rate (experiments)  ─┘    one per tick

A source yields at its own rate and never waits for whoever consumes it: a consumer that
falls behind drops frames (device_client/pipeline.py keeps the newest). The device resizes
each frame to the model's input inside its measured latency, as a camera frame would be.

OpenCV is not part of the lean device install: ``pip install 'splitnet[camera]'`` (or
Raspberry Pi OS's ``python3-picamera2`` / ``python3-opencv``).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CAMERA_FPS = 15.0
DEFAULT_CAMERA_SIZE = (640, 480)  # width, height: the camera's own frames, resized later
VIDEO_FPS_WHEN_UNKNOWN = 30.0
INSTALL_HINT = "pip install 'splitnet[camera]' (OpenCV), or on Raspberry Pi OS " \
               "apt install python3-picamera2 or python3-opencv"


class SourceError(RuntimeError):
    """A frame source that cannot be opened or read; the message says what to do."""


class FrameSource(ABC):
    """Frames at the source's own rate."""

    fps: float
    name: str

    @abstractmethod
    def frames(self, stop: threading.Event) -> Iterator[Any]:
        """Frames until the source ends or ``stop`` is set."""

    @abstractmethod
    def close(self) -> None:
        """Release the device or file (idempotent)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def paced(items: Iterable[Any], fps: float, stop: threading.Event) -> Iterator[Any]:
    """``items``, the i-th no earlier than i / fps after the first: a camera's clock."""
    started = time.perf_counter()
    for index, item in enumerate(items):
        if stop.wait(max(started + index / fps - time.perf_counter(), 0.0)):
            return
        yield item


class FrameList(FrameSource):
    """Frames held in memory, looped, at ``fps``: the experiments' camera."""

    def __init__(self, frames: Sequence[Any], fps: float, loop: bool = True) -> None:
        if not frames:
            raise SourceError("no frames to stream")
        self._frames, self.fps, self._loop = frames, float(fps), loop
        self.name = f"{len(frames)} frames at {fps:g} fps"

    def frames(self, stop: threading.Event) -> Iterator[Any]:
        def endless() -> Iterator[Any]:
            while True:
                yield from self._frames
                if not self._loop:
                    return

        return paced(endless(), self.fps, stop)

    def close(self) -> None:
        """Nothing to release."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise SourceError(f"OpenCV is not installed: {INSTALL_HINT}") from None
    return cv2


class VideoFile(FrameSource):
    """A video file (anything OpenCV's FFmpeg reads: MP4, AVI/MJPEG, ...) at its own rate."""

    def __init__(self, path: Path, loop: bool = False) -> None:
        cv2 = _cv2()
        if not Path(path).is_file():
            raise SourceError(f"--video {path}: no such file")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"--video {path}: OpenCV cannot open it as a video")
        reported = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if 0 < reported <= 240 else VIDEO_FPS_WHEN_UNKNOWN
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if self.frame_count <= 0:
            raise SourceError(f"--video {path}: the file holds no frames")
        self.name, self._loop, self._cv2 = str(path), loop, cv2

    def _decoded(self) -> Iterator[np.ndarray]:
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                if not self._loop:
                    return
                self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self._capture.read()
                if not ok:
                    return
            yield bgr[..., ::-1]  # OpenCV's BGR → RGB

    def frames(self, stop: threading.Event) -> Iterator[np.ndarray]:
        return paced(self._decoded(), self.fps, stop)

    def close(self) -> None:
        self._capture.release()


class Camera(FrameSource):
    """A live camera: the Pi camera module through picamera2 when it is installed, else
    V4L2 ``/dev/video{index}`` through OpenCV. Its frames come at its own rate."""

    def __init__(self, index: int = 0, fps: float = DEFAULT_CAMERA_FPS,
                 size: tuple[int, int] = DEFAULT_CAMERA_SIZE) -> None:
        self.fps = float(fps)
        self._picamera: Any = None
        self._capture: Any = None
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            self._open_v4l2(index, size)
            return
        self._picamera = Picamera2(index)
        frame_us = int(1e6 / self.fps)
        self._picamera.configure(self._picamera.create_video_configuration(
            main={"size": size, "format": "RGB888"},
            controls={"FrameDurationLimits": (frame_us, frame_us)}))
        self._picamera.start()
        self.name = f"picamera2 camera {index}"

    def _open_v4l2(self, index: int, size: tuple[int, int]) -> None:
        try:
            cv2 = _cv2()
        except SourceError:
            raise SourceError(f"no camera library: neither picamera2 nor OpenCV is "
                              f"installed; {INSTALL_HINT}") from None
        self._capture = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not self._capture.isOpened():
            raise SourceError(f"--camera {index}: /dev/video{index} cannot be opened (is a "
                              "camera attached, and is this user in the 'video' group?)")
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self._capture.set(cv2.CAP_PROP_FPS, self.fps)
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or self.fps)
        self.name = f"V4L2 /dev/video{index}"

    def frames(self, stop: threading.Event) -> Iterator[np.ndarray]:
        while not stop.is_set():
            if self._picamera is not None:
                # "RGB888" is libcamera's name for B, G, R bytes in memory
                yield self._picamera.capture_array("main")[..., ::-1]
                continue
            ok, bgr = self._capture.read()  # blocks until the camera's next frame
            if not ok:
                raise SourceError(f"{self.name}: the camera stopped delivering frames")
            yield bgr[..., ::-1]

    def close(self) -> None:
        if self._picamera is not None:
            self._picamera.stop()
            self._picamera.close()
            self._picamera = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write uint8 frames, RGB (H, W, 3) or grey (H, W), as a Motion-JPEG AVI at ``fps``:
    test and experiment input."""
    cv2 = _cv2()
    if not frames:
        raise SourceError(f"no frames to write to {path}")
    frames = [np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f for f in frames]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), float(fps),
                             (width, height))
    if not writer.isOpened():
        raise SourceError(f"OpenCV cannot write {path}")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
        writer.release()
    return path


def open_source(camera: int | None = None, video: Path | None = None,
                loop: bool = False) -> FrameSource:
    """The camera numbered ``camera``, or the video file ``video``; SourceError if neither
    can be opened."""
    if (camera is None) == (video is None):
        raise SourceError("give one frame source: a camera or a video file")
    return Camera(camera) if camera is not None else VideoFile(Path(str(video)), loop)
