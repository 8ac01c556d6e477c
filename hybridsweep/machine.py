"""What a timing ran on: the CPU, the bf16 units torch can use on it, cores, threads and GPUs.

Speed on this field's CPUs differs by the bf16 units they carry (AVX512-BF16 multiplies bf16 at
2-3x fp32, AMX at ~7x; without either, bf16 is emulated and slower than fp32), so a time means
little without them beside it: every point's run carries :func:`describe_machine` as a tag, and
the benchmarks print it with their figures.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_bf16_units() -> list[str]:
    """The CPU's units that multiply bf16 natively, as torch sees them: ``AMX``, ``AVX512-BF16``."""
    # torch.cpu exposes these probes only under private names; oneDNN dispatches on the same flags.
    units = {"AMX": torch.cpu._is_amx_tile_supported(), "AVX512-BF16": torch.cpu._is_avx512_bf16_supported()}
    return [name for name, present in units.items() if present]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """One line: CPU model with its bf16 units (or ``no bf16 units``), cores this process may use,
    torch's version and thread count, and the CUDA devices where there are any, e.g.
    ``Intel(R) Xeon(R) Processor (AMX, AVX512-BF16), 2 cores, torch 2.13.0+cpu with 1 thread(s)``."""
    units = cpu_bf16_units()
    line = (f"{cpu_model()} ({', '.join(units) if units else 'no bf16 units'}), {usable_cores()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
        line += ", GPUs: " + ", ".join(f"{names.count(name)}x {name}" for name in dict.fromkeys(names))
    return line
