"""Emulated targets: a Raspberry Pi's aarch64 userland (Debian's arm64 packages, the aarch64 wheels, edgeproof)
in a sysroot under the user's cache, run by qemu-user with the board's CPU model.

`edgeproof targets build rpi5` makes one (edgeproof.targets.build); `parity --target` and `run --target` run the
runtime in it (edgeproof.targets.remote, edgeproof.targets.worker). It proves the aarch64 kernels' results, never
the board's speed: timings under emulation are not reported as the board's.
"""
