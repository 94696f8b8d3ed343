"""Host detection with faked hosts: fake /proc and /sys trees, fake provider lists, a fake dlopen."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeproof.devices import detect, get_profile
from edgeproof.devices.probe import (
    HostFacts,
    check_profile,
    choose,
    host_facts,
    normalize_machine,
    probe_cpu,
    probe_edgetpu_devices,
    probe_edgetpu_library,
    probe_model,
    probe_openvino,
    probe_ort_providers,
    probe_tegra,
)
from edgeproof.errors import UsageError

X86_CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n\n" \
              "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu\n"
PI5_CPUINFO = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n" \
              "CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
PI4_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
ORT_CPU = ["CPUExecutionProvider"]


def fake_root(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return tmp_path


def facts(**kw) -> HostFacts:
    base = {"machine": "x86_64", "cpu_vendor": "AuthenticAMD", "cpu_flags": ["avx2"], "ort_providers": ORT_CPU,
                "edgetpu_detail": "libedgetpu.so.1: cannot open shared object file"}
    return HostFacts(**{**base, **kw})


# ---- probes --------------------------------------------------------------------------------

def test_probe_model_strips_nul(tmp_path):
    root = fake_root(tmp_path, {"proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00"})
    assert probe_model(root) == "Raspberry Pi 5 Model B Rev 1.0"
    assert probe_model(tmp_path / "nothing") is None


def test_probe_cpu_x86_and_arm(tmp_path):
    assert probe_cpu(fake_root(tmp_path / "a", {"proc/cpuinfo": X86_CPUINFO})) == (
        "GenuineIntel", ["fpu", "sse4_2", "avx2", "avx512f", "avx512_vnni"])
    vendor, flags = probe_cpu(fake_root(tmp_path / "b", {"proc/cpuinfo": PI5_CPUINFO}))
    assert vendor == "ARM" and "asimddp" in flags


def test_probe_tegra(tmp_path):
    root = fake_root(tmp_path, {"etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178\nx\n"})
    assert probe_tegra(root).startswith("# R35 (release)")
    assert probe_tegra(tmp_path / "none") is None


def test_probe_edgetpu_library_uses_the_loader():
    def refuse(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    ok, detail = probe_edgetpu_library(refuse)
    assert not ok and "libedgetpu.so.1" in detail
    loaded = []
    assert probe_edgetpu_library(loaded.append) == (True, "libedgetpu.so.1 loaded") and loaded == ["libedgetpu.so.1"]


def test_probe_edgetpu_devices_usb_and_pcie(tmp_path):
    root = fake_root(tmp_path, {"sys/bus/usb/devices/2-1/idVendor": "18d1\n", "sys/bus/usb/devices/2-1/idProduct": "9302\n",
                                "sys/bus/usb/devices/1-1/idVendor": "046d\n", "sys/bus/usb/devices/1-1/idProduct": "c52b\n",
                                "dev/apex_0": ""})
    assert probe_edgetpu_devices(root) == ["usb 18d1:9302", "pcie /dev/apex_0"]


def test_probe_ort_and_openvino_with_fake_imports():
    def missing(name):
        raise ImportError(name)

    assert probe_ort_providers(missing) is None
    fake_ort = SimpleNamespace(get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert probe_ort_providers(lambda n: fake_ort) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert probe_openvino(missing) == (None, [])
    fake_ov = SimpleNamespace(__version__="2026.0", Core=lambda: SimpleNamespace(available_devices=["CPU", "GPU.0"]))
    assert probe_openvino(lambda n: fake_ov) == ("2026.0", ["CPU", "GPU.0"])


@pytest.mark.parametrize("raw,norm", [("AMD64", "x86_64"), ("x86_64", "x86_64"), ("arm64", "aarch64"),
                                      ("aarch64", "aarch64"), ("armv7l", "armv7l")])
def test_normalize_machine(raw, norm):
    assert normalize_machine(raw) == norm


def test_host_facts_on_a_fake_pi5(tmp_path):
    root = fake_root(tmp_path, {"proc/device-tree/model": b"Raspberry Pi 5 Model B Rev 1.0\x00",
                                "proc/cpuinfo": PI5_CPUINFO})

    def importer(name):
        if name == "onnxruntime":
            return SimpleNamespace(get_available_providers=lambda: ORT_CPU)
        raise ImportError(name)

    def no_lib(name):
        raise OSError("not found")

    f = host_facts(root=root, machine="aarch64", importer=importer, loader=no_lib, environ={})
    assert f.model.startswith("Raspberry Pi 5") and f.openvino_version is None and not f.edgetpu_loadable
    profile, reasons = detect(f)
    assert profile.name == "rpi5"
    assert any("asimddp" in r for r in reasons) and reasons[-1].startswith("chose 'rpi5'")


# ---- decisions -----------------------------------------------------------------------------

@pytest.mark.parametrize("model,expected", [
    ("Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
    ("Raspberry Pi Compute Module 5 Rev 1.0", "rpi5"),
    ("Raspberry Pi 4 Model B Rev 1.5", "rpi4"),
    ("Raspberry Pi 400 Rev 1.1", "rpi4"),
    ("Raspberry Pi Compute Module 4 Rev 1.0", "rpi4"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3", "generic-aarch64"),
    ("Pine64 RockPro64", "generic-aarch64"),
])
def test_arm_boards(model, expected):
    profile, reasons = choose(facts(machine="aarch64", model=model, cpu_vendor="ARM", cpu_flags=["asimd"]))
    assert profile.name == expected
    assert any(model in r for r in reasons)


def test_pi_on_32bit_os_warns():
    profile, reasons = choose(facts(machine="armv7l", model="Raspberry Pi 4 Model B Rev 1.5"))
    assert profile.name == "rpi4" and any("64-bit Raspberry Pi OS" in r for r in reasons)


def test_coral_when_libedgetpu_loads():
    profile, reasons = choose(facts(machine="aarch64", model="Raspberry Pi 5 Model B", edgetpu_loadable=True,
                                    edgetpu_devices=["usb 18d1:9302"]))
    assert profile.name == "coral" and "usb 18d1:9302" in reasons[-1]
    profile, reasons = choose(facts(edgetpu_loadable=True))
    assert profile.name == "coral" and "plug it in" in reasons[-1]


def test_coral_seen_but_library_missing_is_explained():
    profile, reasons = choose(facts(edgetpu_devices=["usb 1a6e:089a"]))
    assert profile.name == "generic-x86_64"
    assert any("does not load" in r and "libedgetpu1-std" in r for r in reasons)


def test_jetson():
    f = facts(machine="aarch64", tegra_release="# R36 (release), REVISION: 3.0", ort_providers=ORT_CPU)
    profile, reasons = choose(f)
    assert profile.name == "jetson" and "Jetson Zoo" in reasons[-1]
    f.ort_providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    profile, reasons = choose(f)
    assert profile.name == "jetson" and "TensorrtExecutionProvider" in reasons[-1]
    assert choose(facts(machine="aarch64", model="NVIDIA Jetson Orin Nano Developer Kit"))[0].name == "jetson"


def test_android_and_qualcomm():
    assert choose(facts(machine="aarch64", ort_providers=["QNNExecutionProvider", *ORT_CPU]))[0].name == "qnn"
    assert choose(facts(machine="aarch64", ort_providers=["NnapiExecutionProvider", *ORT_CPU]))[0].name == "android-npu"
    profile, reasons = choose(facts(machine="aarch64", android=True))
    assert profile.name == "android-npu" and "--use_nnapi" in reasons[-1]


def test_intel_accelerators_and_cpus():
    ov = {"openvino_version": "2026.4"}
    assert choose(facts(**ov, openvino_devices=["CPU", "GPU", "NPU"]))[0].name == "intel-npu"
    assert choose(facts(**ov, openvino_devices=["CPU", "GPU.0", "GPU.1"]))[0].name == "intel-gpu"
    assert choose(facts(**ov, openvino_devices=["CPU"], cpu_vendor="GenuineIntel"))[0].name == "intel"
    profile, reasons = choose(facts(**ov, openvino_devices=["CPU"], cpu_vendor="AuthenticAMD"))
    assert profile.name == "generic-x86_64" and any("--device intel" in r for r in reasons)
    assert choose(facts(cpu_vendor="GenuineIntel"))[0].name == "generic-x86_64"  # no openvino


def test_unknown_architecture_is_a_usage_error():
    with pytest.raises(UsageError, match="riscv64"):
        choose(facts(machine="riscv64"))


def test_detect_on_this_host_names_a_profile_for_its_architecture():
    profile, reasons = detect()
    machine = normalize_machine(platform.machine())
    assert machine in profile.arch
    assert reasons and reasons[-1].startswith(f"chose '{profile.name}'")
    if machine == "x86_64" and not host_facts().edgetpu_loadable:
        assert profile.name in ("generic-x86_64", "intel", "intel-gpu", "intel-npu")


# ---- can this host run a profile? -----------------------------------------------------------

def test_check_profile_reports_missing_accelerators():
    f = facts(openvino_version="2026.4", openvino_devices=["CPU"])
    coral = {ok: m for ok, m in check_profile(get_profile("coral"), f)}
    assert "delegate libedgetpu.so.1 does not load: libedgetpu.so.1: cannot open shared object file" == coral[False]
    jetson = check_profile(get_profile("jetson"), facts(machine="aarch64"))
    assert [ok for ok, _ in jetson] == [True, False, False]
    assert "TensorrtExecutionProvider not available" in jetson[1][1]
    gpu = check_profile(get_profile("intel-gpu"), f)
    assert gpu[-1] == (False, "OpenVINO device GPU not available (OpenVINO lists: CPU)")
    assert all(ok for ok, _ in check_profile(get_profile("intel"), f))
    assert check_profile(get_profile("intel"), facts())[-1] == (False, "openvino is not installed")
    assert check_profile(get_profile("rpi5"), f)[0][0] is False  # x86_64 is not in ['aarch64']


def test_detect_stays_a_function_after_the_probe_module_is_imported():
    import edgeproof.devices
    import edgeproof.devices.probe

    assert callable(edgeproof.devices.detect) and not isinstance(edgeproof.devices.detect, type(edgeproof))
