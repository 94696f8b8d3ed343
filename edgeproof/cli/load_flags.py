"""The load flags of `run` and `serve` (--backend, --threads, --device, --delegate, --provider,
--allow-fallback, --no-verify, --trust-model and the contract flags), read into the one LoadSpec the library takes."""

from __future__ import annotations

import argparse

from edgeproof.cli.contract_flags import overrides_from
from edgeproof.runtime.spec import LoadSpec


def load_spec_from(args: argparse.Namespace) -> LoadSpec:
    """args.model with every load flag, checked once (UsageError, one line, the flag's name)."""
    return LoadSpec(args.model, backend=args.backend, threads=args.threads, device=args.device,
                    delegates=args.delegate, providers=args.provider, allow_fallback=args.allow_fallback,
                    overrides=overrides_from(args), verify=not args.no_verify,
                    trust_model=getattr(args, "trust_model", False))
