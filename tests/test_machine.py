"""The machine line that every point's times and every benchmark's figures carry."""

import os

import pytest
import torch

from hybridsweep.machine import describe_machine
from hybridsweep.precision import has_fast_bf16


@pytest.mark.parametrize(("amx", "avx512_bf16", "named"), [
    (True, True, "(AMX, AVX512-BF16)"), (False, True, "(AVX512-BF16)"), (False, False, "(no bf16 units)"),
])
def test_the_line_names_the_cpus_bf16_units_and_auto_precision_follows_them(monkeypatch, amx, avx512_bf16, named):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = describe_machine()
    assert named in line
    assert f"{len(os.sched_getaffinity(0))} cores" in line and f"with {torch.get_num_threads()} thread(s)" in line
    assert "GPUs" not in line
    assert has_fast_bf16(torch.device("cpu")) == (amx or avx512_bf16)


def test_the_line_counts_gpus_by_name(monkeypatch):
    names = ["NVIDIA H100", "NVIDIA H100", "NVIDIA A10"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: names[index])
    assert describe_machine().endswith(", GPUs: 2x NVIDIA H100, 1x NVIDIA A10")
