"""Engines that run the runtime's per-image work somewhere other than this process.

`ray_cluster` starts or joins Ray; `ray_run` runs `edgeproof run`'s decode + classify through Ray Data
(parity's Ray pass lives in edgeproof.parity.ray_engine). The per-image functions are the local
pipeline's own; only the scheduling differs.
"""
