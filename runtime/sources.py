"""Input sources for `edgeproof run`: files, folders, globs, list files, videos, cameras, streams, picam.

`open_source(spec)` decides what the string means and returns a Source that yields Items in
order: file items carry a path (decoded later in worker threads), capture items carry a BGR
frame. Live sources retry failed grabs with exponential backoff, then stop cleanly with a reason.
Capture objects are injectable (`capture_factory`, `picam_factory`) so tests need no hardware.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import EdgeproofError, UsageError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
              ".jp2", ".exr", ".hdr", ".sr", ".ras", ".pic", ".avif"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}
LIST_EXTS = {".txt", ".lst", ".list"}
URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp|file)://", re.IGNORECASE)


@dataclass
class Item:
    index: int
    name: str  # file path, or "<source>#<frame number>"
    path: Path | None = None
    frame: np.ndarray | None = None  # BGR uint8 for captured frames


class Source:
    kind = "source"
    is_stream = False  # frames from a capture: --save writes a video

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.stop_reason: str | None = None
        self.fps: float | None = None

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        """Release cameras/streams; safe to call twice."""


class FileSource(Source):
    """A fixed list of image paths (single image, folder, glob or list file)."""

    def __init__(self, spec: str, kind: str, paths: list[Path]) -> None:
        super().__init__(spec)
        self.kind = kind
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Item]:
        for i, p in enumerate(self.paths):
            yield Item(i, str(p), path=p)


class _GrabLoop(Source):
    """Shared retry/backoff logic for anything that returns frames one at a time."""

    is_stream = True
    live = True  # a video file ends on the first failed grab; live sources retry

    def __init__(self, spec: str, retries: int = 5, backoff: float = 0.1, max_backoff: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(spec)
        self.retries, self.backoff, self.max_backoff, self.sleep = retries, backoff, max_backoff, sleep
        self.retried = 0  # total failed grabs that were retried

    def _grab(self) -> np.ndarray | None:
        raise NotImplementedError

    def _recover(self) -> None:
        """Called between retries (streams reconnect here)."""

    def __iter__(self) -> Iterator[Item]:
        n = 0
        while True:
            frame = self._grab()
            if frame is None:
                if not self.live:
                    self.stop_reason = self.stop_reason or "end of video"
                    return
                fails, delay, last = 0, self.backoff, 0.0
                while frame is None and fails < self.retries:
                    fails += 1
                    self.retried += 1
                    self.sleep(delay)
                    last, delay = delay, min(delay * 2, self.max_backoff)
                    self._recover()
                    frame = self._grab()
                if frame is None:
                    self.stop_reason = (f"{fails + 1} consecutive frame grabs failed from '{self.spec}' "
                                        f"(retried {fails}x, backoff {self.backoff:g}-{last:g} s); stopped")
                    return
            yield Item(n, f"{self.spec}#{n}", frame=frame)
            n += 1


def default_capture(target: int | str):
    # FFmpeg's own log lines ('moov atom not found', '[tcp @ 0x..] Connection refused') duplicate the one
    # clear error raised when the capture does not open; a user's own setting wins.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    from edgeproof.runtime.preprocess import quiet_opencv

    return quiet_opencv().VideoCapture(target)


class CaptureSource(_GrabLoop):
    """cv2.VideoCapture (or an injected object with isOpened/read/release/get): video, camera, device, URL."""

    def __init__(self, spec: str, kind: str, target: int | str, factory: Callable[[Any], Any] | None = None,
                 **retry) -> None:
        super().__init__(spec, **retry)
        self.kind, self.target = kind, target
        self.factory = factory or default_capture
        # A video file (also as a file:// URL) ends at its last frame; cameras and streams are retried.
        self.live = kind != "video" and not str(target).lower().startswith("file://")
        self.cap = self.factory(target)
        if self.cap is None or not self.cap.isOpened():
            raise EdgeproofError(self._open_error())
        try:
            fps = float(self.cap.get(5))  # cv2.CAP_PROP_FPS
            self.fps = fps if 0 < fps < 1000 else None
        except Exception:
            self.fps = None

    def _open_error(self) -> str:
        what = {"camera": f"camera {self.spec}", "device": f"camera device {self.spec}",
                "stream": f"stream {self.spec}", "video": f"video file '{self.spec}'"}[self.kind]
        hint = {"camera": "no camera at that index, or it is busy; list cameras with: ls /dev/video*",
                "device": "the device exists but cannot be opened (busy, or no permission: add yourself to the "
                          "'video' group)",
                "stream": "check the URL, credentials and network; test it with: ffplay URL",
                "video": "the file is not a video OpenCV can decode (codec missing or file corrupt)"}[self.kind]
        return f"cannot open {what}: {hint}"

    def _grab(self) -> np.ndarray | None:
        try:
            ok, frame = self.cap.read()
        except Exception:
            return None
        return frame if ok and frame is not None and getattr(frame, "size", 0) else None

    def _recover(self) -> None:
        if self.kind == "stream":  # network streams: reconnect
            try:
                self.cap.release()
            except Exception:
                pass
            self.cap = self.factory(self.target)

    def close(self) -> None:
        if self.cap is not None:
            try:
                self.cap.release()
            finally:
                self.cap = None


def default_picam():
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise EdgeproofError("--source picam needs the picamera2 package, which is not installed; on Raspberry Pi OS "
                             "install it with: sudo apt install python3-picamera2 (use a venv with "
                             "--system-site-packages)") from None
    try:
        cam = Picamera2()
        # picamera2's "RGB888" is stored B,G,R in memory: what OpenCV calls BGR.
        cam.configure(cam.create_preview_configuration(main={"format": "RGB888", "size": (640, 480)}))
        cam.start()
    except Exception as exc:
        raise EdgeproofError(f"cannot open the Raspberry Pi camera (picam): {exc}; check the ribbon cable and "
                             "that no other program uses the camera (libcamera-hello --list-cameras)") from None
    return cam


class PicamSource(_GrabLoop):
    kind = "picam"

    def __init__(self, spec: str = "picam", factory: Callable[[], Any] | None = None, **retry) -> None:
        super().__init__(spec, **retry)
        self.cam = (factory or default_picam)()

    def _grab(self) -> np.ndarray | None:
        try:
            frame = self.cam.capture_array()
        except Exception:
            return None
        if frame is None:
            return None
        return frame[:, :, :3] if frame.ndim == 3 and frame.shape[2] == 4 else frame

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
            except Exception:
                pass
            self.cam = None


def _folder_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _list_file(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read list file '{path}': {exc}; give a text file with one image path per line") from None
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out


def open_source(spec: str | int, capture_factory: Callable[[Any], Any] | None = None,
                picam_factory: Callable[[], Any] | None = None, **retry) -> Source:
    """What `--source` means, in this order: picam, camera index, /dev/video*, URL, folder, file, glob."""
    spec = str(spec)
    if spec.lower() == "picam":
        return PicamSource(spec, picam_factory, **retry)
    if spec.isdigit():
        return CaptureSource(spec, "camera", int(spec), capture_factory, **retry)
    if spec.startswith("/dev/video"):
        if capture_factory is None and not Path(spec).exists():
            raise EdgeproofError(f"camera device {spec} does not exist; list cameras with: ls /dev/video*")
        return CaptureSource(spec, "device", spec, capture_factory, **retry)
    if URL_RE.match(spec):
        return CaptureSource(spec, "stream", spec, capture_factory, **retry)
    path = Path(spec).expanduser()
    if path.is_dir():
        paths = _folder_images(path)
        if not paths:
            raise UsageError(f"folder '{spec}' holds no images ({', '.join(sorted(IMAGE_EXTS)[:6])}, ...)")
        return FileSource(spec, "folder", paths)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTS:
            return CaptureSource(spec, "video", str(path), capture_factory, **retry)
        if suffix in LIST_EXTS:
            paths = _list_file(path)
            if not paths:
                raise UsageError(f"list file '{spec}' names no images; give one image path per line")
            return FileSource(spec, "list", paths)
        return FileSource(spec, "image", [path])
    if any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(str(path), recursive=True) if Path(p).is_file())
        if not paths:
            raise UsageError(f"glob '{spec}' matches no files")
        return FileSource(spec, "glob", paths)
    raise UsageError(f"source '{spec}' not found: not a file, folder, glob match, camera index (0), "
                     "/dev/videoN, stream URL (rtsp://, http://) or 'picam'")
