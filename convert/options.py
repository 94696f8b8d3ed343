"""ConvertOptions: what one conversion makes and how, validated once when it is built.

`convert_run` builds one from its keyword arguments (or takes one the CLI built), and every later
step reads the checked values; nothing below re-validates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from edgeproof.convert.onnx_export import DEFAULT_OPSET, MIN_OPSET
from edgeproof.errors import UsageError
from edgeproof.formats import INT8_RECIPE, Format, parse_format_list

IO_TYPES = INT8_RECIPE.io_types  # what --int8-io may ask for


def _as_formats(formats: str | Format | Iterable[str | Format]) -> tuple[Format, ...]:
    if isinstance(formats, Format):
        formats = [formats]
    if not isinstance(formats, str):
        formats = [f.name if isinstance(f, Format) else str(f) for f in formats]
    return tuple(parse_format_list(formats))


@dataclass(frozen=True)
class ConvertOptions:
    """formats: names, Format rows or 'all' / 'a,b' (stored as Format rows, in table order).
    calib_count: calibration images for calibrated formats; int8_io: I/O type of full-integer formats;
    opset: ONNX opset; seed: seed of the calibration sample; int8_search: choose each int8 artifact's recipe on
    held-out calibration images (convert.quant_search), False: the format table's recipe as is."""

    formats: tuple[Format, ...] = field(default=())
    calib_count: int = 200
    int8_io: str = "int8"
    opset: int = DEFAULT_OPSET
    seed: int = 0
    int8_search: bool = True

    def __post_init__(self) -> None:
        fmts = _as_formats(self.formats if self.formats != () else "all")
        object.__setattr__(self, "formats", fmts)
        if self.int8_io not in IO_TYPES:
            raise UsageError(f"--int8-io '{self.int8_io}' is not valid; valid: {', '.join(IO_TYPES)}")
        if any(f.calibrated for f in fmts) and not (_is_int(self.calib_count) and self.calib_count >= 1):
            raise UsageError(f"calibration count {self.calib_count} is not valid; give a positive number such as 200")
        # the upper bound is the installed tf2onnx's: checked (check_opset) once TensorFlow is loaded
        if any(f.family == "onnx" for f in fmts) and not (_is_int(self.opset) and self.opset >= MIN_OPSET):
            raise UsageError(f"ONNX opset {self.opset!r} is not valid; valid: {MIN_OPSET} or newer "
                             f"(default {DEFAULT_OPSET})")
        if not _is_int(self.seed):
            raise UsageError(f"--seed {self.seed!r} is not valid; give an integer")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.formats]

    @property
    def calibrated(self) -> bool:
        """Whether any requested format needs calibration images."""
        return any(f.calibrated for f in self.formats)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
