"""Which files a folder, list file or glob source names: images and videos by suffix, recursive folders
(an unlistable subfolder is an input with its reason), list files of one path per line."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
              ".jp2", ".exr", ".hdr", ".sr", ".ras", ".pic", ".avif"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}
LIST_EXTS = {".txt", ".lst", ".list"}


def _wanted(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS or p.suffix.lower() in VIDEO_EXTS


def _folder_inputs(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """Image and video files under `root` (recursive, sorted); subfolders that cannot be listed are
    inputs too, with {path: reason}."""
    from edgeproof.runtime.image_check import DENIED

    found: list[Path] = []
    errors: dict[Path, str] = {}

    def unlistable(exc: OSError) -> None:
        p = Path(exc.filename)
        errors[p] = DENIED if isinstance(exc, PermissionError) else f"unreadable ({exc.strerror or exc})"
        found.append(p)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable):
        dirnames.sort()
        found.extend(Path(dirpath, n) for n in filenames if _wanted(Path(n)))
    return sorted(found), errors


def _list_file(path: Path) -> list[Path]:
    from edgeproof import user_files

    text = user_files.read_text(path, user_files.LIST)  # a regular file, bounded: never a FIFO or a sparse 1.5 GB
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)
    return out
