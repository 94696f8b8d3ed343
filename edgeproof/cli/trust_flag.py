"""--trust-model, defined once for every command that loads a model (convert, parity, run, bench, serve)."""

from __future__ import annotations

import argparse

from edgeproof.model_trust import TRUST_FLAG

HELP = ("run a model even where it can act outside its tensors: a SavedModel or Flex .tflite op that reads or "
        "writes files, runs Python or reaches the network; a .keras/.h5 Lambda layer (Keras safe mode off); an "
        "ONNX custom-op domain. Only for a model whose source you trust (docs/reliability.md)")


def add_trust_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(TRUST_FLAG, action="store_true", help=HELP)
