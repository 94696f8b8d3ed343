"""Input sources for `edgeproof run`: files, folders, globs, list files, videos, cameras, streams, picam.

`open_source(spec)` decides what the string means and returns a Source that yields Items in
order: file items carry a path (decoded later in worker threads), capture items carry a BGR
frame. Folder, glob and list sources take image and video files; a video among them is expanded to
its frames, and one OpenCV cannot open is an Item with `error` set: skipped with that reason, the run
goes on. A bad entry (missing, a directory, unreadable) is skipped with its reason by the image check. Live sources retry failed grabs with exponential backoff, then stop cleanly with a reason.
Capture objects are injectable (`capture_factory`, `picam_factory`) so tests need no hardware.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.runtime.input_files import (  # noqa: F401 - IMAGE_EXTS/VIDEO_EXTS: this module's public names
    IMAGE_EXTS,
    LIST_EXTS,
    VIDEO_EXTS,
    _folder_inputs,
    _list_file,
    _wanted,
)

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "file")


def is_url(spec: str) -> bool:
    """'rtsp://...', 'HTTP://...': a stream URL of a scheme OpenCV opens (any case)."""
    scheme, sep, _ = spec.partition("://")
    return bool(sep) and scheme.casefold() in URL_SCHEMES


@dataclass
class Item:
    index: int
    name: str  # file path, or "<source>#<frame number>"
    path: Path | None = None
    frame: np.ndarray | None = None  # BGR uint8 for captured frames
    error: str | None = None  # why this input cannot be delivered: skip it with this reason


class StopReason:
    """The words Summary.stopped uses for why a run ended (a source sets its own on `stop_reason`)."""

    END_OF_VIDEO = "end of video"
    BY_USER = "stopped by the user"
    INTERRUPTED = "interrupted (Ctrl-C)"
    TERMINATED = "terminated (SIGTERM)"

    @staticmethod
    def limit(n: int) -> str:
        return f"limit of {n} reached"


class Source:
    """What the pipeline reads: Items in order, plus the state the pipeline and the CLI read.

    kind: what the spec turned out to be ("folder", "camera", ...). is_stream: frames from a capture
    (--save writes a video). live: frames arrive in real time (a full buffer drops the oldest instead
    of waiting). stop_reason: why iteration ended, when it says more than "the inputs ran out". lost:
    the camera/stream stopped delivering frames (gave up after its retries). max_pixels: the image
    check's pixel limit for this source's inputs (None: EDGEPROOF_MAX_IMAGE_PIXELS or 100 MP).
    excluded: inputs left out by the `exclude` filter the source was opened with.
    """

    kind: str = "source"
    is_stream: bool = False
    live: bool = False

    def __init__(self, spec: str, max_pixels: int | None = None) -> None:
        self.spec = spec
        self.stop_reason: str | None = None
        self.lost = False
        self.fps: float | None = None
        self.max_pixels = max_pixels
        self.excluded: list[Path] = []

    def __iter__(self) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        """Release cameras/streams; safe to call twice."""


class FileSource(Source):
    """A fixed list of paths (single image, folder, glob or list file); video files among them give their frames."""

    def __init__(self, spec: str, kind: str, paths: list[Path], capture_factory: Callable[[Any], Any] | None = None,
                 errors: dict[Path, str] | None = None, max_pixels: int | None = None,
                 exclude: Callable[[Path], bool] | None = None) -> None:
        super().__init__(spec, max_pixels)
        self.kind = kind
        if exclude is not None:  # e.g. an earlier --save's outputs in the input folder: not inputs
            self.excluded = [p for p in paths if exclude(p)]
            paths = [p for p in paths if not exclude(p)] if self.excluded else paths
        self.paths = paths
        self.capture_factory = capture_factory
        self.errors = errors or {}  # path -> reason known up front (an unlistable subfolder)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Item]:
        i = 0
        for p in self.paths:
            if p in self.errors:
                yield Item(i, str(p), path=p, error=self.errors[p])
                i += 1
            elif p.suffix.lower() in VIDEO_EXTS and p.is_file():
                for item in self._video_frames(p, i):
                    yield item
                    i += 1
            else:
                yield Item(i, str(p), path=p)
                i += 1

    def _video_frames(self, path: Path, start: int) -> Iterator[Item]:
        from edgeproof.runtime.image_check import VIDEO_UNOPENED

        try:
            video = CaptureSource(str(path), "video", str(path), self.capture_factory, max_pixels=self.max_pixels)
        except EdgeproofError as exc:
            yield Item(start, str(path), path=path, error=getattr(exc, "reason", VIDEO_UNOPENED))
            return
        frames = 0
        try:
            for k, item in enumerate(video):
                frames += 1
                yield Item(start + k, item.name, frame=item.frame)
        finally:
            video.close()
        if not frames:  # opened, but not one frame: counted as skipped, never silently nothing
            from edgeproof.runtime.image_check import VIDEO_EMPTY

            yield Item(start, str(path), path=path, error=VIDEO_EMPTY)


class _GrabLoop(Source):
    """Shared retry/backoff logic for anything that returns frames one at a time."""

    is_stream = True
    live = True  # a video file ends on the first failed grab; live sources retry

    def __init__(self, spec: str, retries: int = 5, backoff: float = 0.1, max_backoff: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(spec)
        self.retries, self.backoff, self.max_backoff, self.sleep = retries, backoff, max_backoff, sleep
        self.retried = 0  # total failed grabs that were retried
        self.grab_error: str | None = None  # the last exception a grab raised (named in the stop reason)

    def _grab_failed(self, exc: Exception) -> None:
        """A grab that raised (not one that returned no frame): logged, retried like a missing frame, and named
        in the stop reason if the source is lost."""
        cause = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if cause != self.grab_error:
            log.warning("%s: a frame grab raised %s; retrying", self.spec, cause)
        self.grab_error = cause

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
                    self.stop_reason = self.stop_reason or StopReason.END_OF_VIDEO
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
                    why = f"; the last raised {self.grab_error}" if self.grab_error else ""
                    self.stop_reason = (f"{fails + 1} consecutive frame grabs failed from '{self.spec}' "
                                        f"(retried {fails}x, backoff {self.backoff:g}-{last:g} s{why}); stopped")
                    self.lost = True
                    return
            yield Item(n, f"{self.spec}#{n}", frame=frame)
            n += 1


def default_capture(target: int | str):
    """cv2.VideoCapture(target). FFmpeg's own log lines are the process owner's to silence (the CLI sets
    OPENCV_FFMPEG_LOGLEVEL at start-up): the library writes no environment variables."""
    from edgeproof.runtime.preprocess import quiet_opencv
    from edgeproof.stderr_filter import filtered_stderr

    cv2 = quiet_opencv()
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    # OpenCV's own AVI reader prints 'Unexpected element. Expected: LIST. Got: <raw bytes>' on fd 2 for a
    # damaged file: the one clear error raised when the capture does not open says it instead.
    with filtered_stderr(lambda line: False):
        return cv2.VideoCapture(target)


class CaptureSource(_GrabLoop):
    """cv2.VideoCapture (or an injected object with isOpened/read/release/get): video, camera, device, URL."""

    def __init__(self, spec: str, kind: str, target: int | str, factory: Callable[[Any], Any] | None = None,
                 max_pixels: int | None = None, **retry) -> None:
        super().__init__(spec, **retry)
        self.max_pixels = max_pixels
        self.kind, self.target = kind, target
        self.factory = factory or default_capture
        # A video file (also as a file:// URL) ends at its last frame; cameras and streams are retried.
        self.live = kind != "video" and not str(target).lower().startswith("file://")
        from edgeproof.runtime.video_check import check_capture_size, check_video_file

        self.cap = None
        if kind == "video":  # the header check every image gets, before any decoder sees the file
            self._checked(check_video_file, str(target))
        self.cap = self.factory(target)
        if self.cap is None or not self.cap.isOpened():
            raise EdgeproofError(self._open_error())
        if kind == "video":
            self._checked(check_capture_size, self.cap)
        try:
            fps = float(self.cap.get(5))  # cv2.CAP_PROP_FPS
            self.fps = fps if 0 < fps < 1000 else None
        except (AttributeError, TypeError, ValueError):  # an injected capture without get() or a number: unknown
            self.fps = None  # (--save then writes its video at Saver's stated default rate)

    def _checked(self, check: Callable[[Any, int | None], None], arg: Any) -> None:
        from edgeproof.runtime.image_check import ImageReadError

        try:
            check(arg, self.max_pixels)
        except ImageReadError as exc:
            self.close()
            error = EdgeproofError(f"cannot read video file '{self.spec}': {exc}; set a higher limit with "
                                   "--max-image-pixels or EDGEPROOF_MAX_IMAGE_PIXELS if you trust the file")
            error.reason = str(exc)  # the skip reason when the video is one input among others
            raise error from None

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
        except Exception as exc:  # noqa: BLE001 - OpenCV's or an injected capture's: logged, retried, named
            self._grab_failed(exc)
            return None
        return frame if ok and frame is not None and getattr(frame, "size", 0) else None

    def _recover(self) -> None:
        if self.kind == "stream":  # network streams: reconnect
            try:
                self.cap.release()
            except Exception as exc:  # noqa: BLE001 - the broken stream is replaced below whatever failed
                log.warning("%s: releasing the stream before reconnecting raised %s: %s", self.spec,
                            type(exc).__name__, exc)
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
    except Exception as exc:  # noqa: BLE001 - picamera2/libcamera errors: one error line naming them
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
        except Exception as exc:  # noqa: BLE001 - picamera2/libcamera errors: logged, retried, named
            self._grab_failed(exc)
            return None
        if frame is None:
            return None
        return frame[:, :, :3] if frame.ndim == 3 and frame.shape[2] == 4 else frame

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
            except Exception as exc:  # noqa: BLE001 - closing: the camera is dropped either way, said once
                log.warning("picam: stopping the camera raised %s: %s", type(exc).__name__, exc)
            self.cam = None


def open_source(spec: str | int, capture_factory: Callable[[Any], Any] | None = None,
                picam_factory: Callable[[], Any] | None = None, max_pixels: int | None = None,
                exclude: Callable[[Path], bool] | None = None, **retry) -> Source:
    """What `--source` means, in this order: picam, camera index, /dev/video*, URL, folder, file, glob.

    max_pixels: the pixel limit of the image/video checks (None: the environment's); exclude: paths of a
    folder/glob/list/image source to leave out (listed on `source.excluded`)."""
    spec = str(spec)
    files = {"max_pixels": max_pixels, "exclude": exclude}
    if spec.lower() == "picam":
        return PicamSource(spec, picam_factory, **retry)
    if spec.isdigit():
        return CaptureSource(spec, "camera", int(spec), capture_factory, max_pixels, **retry)
    if spec.startswith("/dev/video"):
        if capture_factory is None and not Path(spec).exists():
            raise EdgeproofError(f"camera device {spec} does not exist; list cameras with: ls /dev/video*")
        return CaptureSource(spec, "device", spec, capture_factory, max_pixels, **retry)
    if is_url(spec):
        return CaptureSource(spec, "stream", spec, capture_factory, max_pixels, **retry)
    path = Path(spec).expanduser()
    if path.is_dir():
        paths, errors = _folder_inputs(path)
        if not paths:
            raise UsageError(f"folder '{spec}' holds no images or videos ({', '.join(sorted(IMAGE_EXTS)[:6])}, ...)")
        return FileSource(spec, "folder", paths, capture_factory, errors, **files)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTS:
            return CaptureSource(spec, "video", str(path), capture_factory, max_pixels, **retry)
        if suffix in LIST_EXTS:
            paths = _list_file(path)
            if not paths:
                raise UsageError(f"list file '{spec}' names no images; give one image path per line")
            return FileSource(spec, "list", paths, capture_factory, **files)
        return FileSource(spec, "image", [path], **files)
    if os.path.lexists(path):  # a FIFO, a device, a symlink loop or a dangling link: skipped with the reason
        return FileSource(spec, "image", [path], **files)
    if any(c in spec for c in "*?["):
        # files, and anything else named like an image (a directory, a FIFO, a symlink loop): skipped
        # with its reason rather than silently
        import glob

        paths = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                       if Path(p).is_file() or _wanted(Path(p)))
        if not paths:
            raise UsageError(f"glob '{spec}' matches no files")
        return FileSource(spec, "glob", paths, capture_factory, **files)
    raise UsageError(f"source '{spec}' not found: not a file, folder, glob match, camera index (0), "
                     "/dev/videoN, stream URL (rtsp://, http://) or 'picam'")
