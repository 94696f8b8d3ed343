"""The preprocessing-contract flags, defined once for `edgeproof run` and `edgeproof convert`.

run:     they override what the artifact carries (or describe a model that carries nothing);
convert: they declare the contract of a bring-your-own model that has no preprocessing layers.
Both read them through `overrides_from(args)` into the same dict (keys of runtime.model.OVERRIDE_KEYS).
"""

from __future__ import annotations

import argparse
import os

from edgeproof.errors import UsageError

# --preset NAME: a whole contract at once (scale, mean, std and channel order on pixels in 0-255); an explicit
# --scale/--mean/--std/--bgr beats the preset's value. Mean/std in the model's channel order.
PRESETS: dict[str, dict] = {
    # torchvision's ImageNet models: x/255, then (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], RGB
    "imagenet-torch": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "bgr": False},
    # Caffe / keras.applications 'caffe' mode (VGG16, ResNet50): BGR 0-255 minus the BGR ImageNet mean, no std
    "imagenet-caffe": {"scale": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0], "bgr": True},
    # Inception / MobileNet 'tf' mode: x / 127.5 - 1, i.e. [-1, 1], RGB
    "tf-inception": {"scale": 1 / 127.5, "mean": [1.0], "std": [1.0], "bgr": False},
    # [0, 1]: x / 255, RGB
    "unit": {"scale": 1 / 255, "mean": [0.0], "std": [1.0], "bgr": False},
    # raw 0-255 pixels, RGB (the model normalizes them itself)
    "raw": {"scale": 1.0, "mean": [0.0], "std": [1.0], "bgr": False},
}


def add_contract_flags(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """--size/--channels/--mean/--std/--scale/--bgr/--labels in one argument group named `title`."""
    g = parser.add_argument_group(title, "the runtime computes x = (pixels * scale - mean) / std on RGB "
                                         "(or BGR with --bgr) pixels in 0-255, resized to --size and converted to "
                                         "the model's channels (1: gray by ITU-R BT.601 luma, 3: color, 4: color + "
                                         "alpha)")
    g.add_argument("--preset", choices=sorted(PRESETS), metavar="NAME",
                   help="a named contract: imagenet-torch (x/255, mean 0.485,0.456,0.406, std 0.229,0.224,0.225, "
                        "RGB), imagenet-caffe (BGR, mean 103.939,116.779,123.68, std 1), tf-inception (x/127.5 - 1, "
                        "RGB), unit (x/255, RGB), raw (0-255, RGB); explicit --scale/--mean/--std/--bgr beat it")
    g.add_argument("--size", metavar="HxW", help="input size, e.g. 224x224 (or 224)")
    g.add_argument("--channels", type=int, metavar="C",
                   help="the model input's channel count, read from the model; needed only for more than 4")
    g.add_argument("--mean", metavar="a,b,c",
                   help="subtracted after scaling: one value or one per channel, e.g. 127.5 or 0.485,0.456,0.406")
    g.add_argument("--std", metavar="a,b,c", help="divided by after the mean: one value or one per channel")
    g.add_argument("--scale", type=float, metavar="s", help="pixels (0-255) are multiplied by s first, e.g. 0.00392")
    g.add_argument("--bgr", action="store_true", default=None, help="the model takes BGR channel order")
    g.add_argument("--labels", metavar="FILE|a,b,c",
                   help="class names: a text file with one label per line, or a comma-separated list")
    return g


def parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        vals = [int(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2 or min(vals) < 1:
        raise UsageError(f"--size '{text}' is not valid; give HxW like 224x224 (or one number for a square)")
    return vals[0], vals[1]


def parse_floats(flag: str, text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals:
        raise UsageError(f"{flag} '{text}' is not valid; give one number or one per channel, comma-separated (a,b,c)")
    return vals


def parse_labels(text: str) -> list[str] | str:
    """A labels file path (kept as a path: the runtime reads it) or the names of a comma-separated list."""
    if not text.strip():  # "" is not "no labels": the flag was given, with nothing in it
        raise UsageError(f"--labels {text!r} is empty; give a text file with one label per line or names like "
                         "cat,dog, or leave --labels out to use the model's own labels")
    if os.path.lexists(text):  # a path that exists is a file, whatever it is: read_labels refuses a FIFO or device
        return text
    if "," in text:
        names = [v.strip() for v in text.split(",")]
        if not all(names):
            raise UsageError(f"--labels '{text}' has an empty name; give a,b,c with every name non-empty, or a FILE")
        return names
    raise UsageError(f"--labels '{text}': no such file and not a comma-separated list; give a text file with one "
                     "label per line, or names like cat,dog")


def overrides_from(args: argparse.Namespace) -> dict:
    """The flags the user gave, as runtime.model.apply_overrides / convert_run(overrides=) take them."""
    ov: dict = {}
    preset = getattr(args, "preset", None)
    if preset:
        ov.update({k: v for k, v in PRESETS[preset].items() if k != "bgr" or v})
    if args.size:
        ov["size"] = parse_size(args.size)
    if getattr(args, "channels", None) is not None:
        ov["channels"] = args.channels
    if args.mean:
        ov["mean"] = parse_floats("--mean", args.mean)
    if args.std:
        ov["std"] = parse_floats("--std", args.std)  # zero / tiny values: refused by contract.Preprocess
    if args.scale is not None:
        ov["scale"] = args.scale
    if args.bgr:
        ov["bgr"] = True
    if args.labels is not None:
        ov["labels"] = parse_labels(args.labels)
    return ov
