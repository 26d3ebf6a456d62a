"""What an organism's exact weights depend on besides the code and the seed, recorded on its card.

Measured (research/determinism.py, research/retrain_organism.py; 2-core AMD EPYC, torch 2.13.0 CPU):
- The same code, seed, libraries, machine and thread count give bit-identical organisms (old code at
  a681603 and main both reproduce the lead's fresh demo organisms exactly; transformers 5.23 vs 5.24 and
  tokenizers 0.23.1 vs 0.23.3 change nothing).
- PyTorch's CPU kernels are picked by instruction set at run time (AVX512 here; AVX2 or plain on other
  CPUs, or with ATEN_CPU_CAPABILITY), MKL picks its own code path by CPU, and reductions split by thread
  count: each changes the weights after 30 steps by 1e-5..1e-4, and 900 steps of training amplify that
  into a different organism (other steerable layers, another layer choice, a failed check and a retry).
- ``PORTABLE_ENV`` pins both code paths (PyTorch's plain kernels, MKL's conditional numerical
  reproducibility) so the weights no longer depend on the CPU's instruction set (checked here by
  switching MKL to AVX2: identical weights). It must be in the environment before torch is imported
  (a Ray task's runtime_env), costs ~1.3-1.5x in training time, and does not remove the dependence on
  the thread count or on the torch / MKL build. We could not test a second CPU model.
"""

from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata

import torch

# PyTorch's portable kernels and MKL's CPU-independent code path; see the module docstring.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
_LIBRARIES = ("torch", "transformers", "tokenizers")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def float_environment() -> dict[str, str | int]:
    """Everything besides code and seed that the trained weights depend on (for the organism card)."""
    env = {k: os.environ.get(k, "") for k in PORTABLE_ENV}
    return {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), **{f"{k}_version": _version(k) for k in _LIBRARIES},
            **env, "portable": all(env[k] == v for k, v in PORTABLE_ENV.items())}


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of every parameter and buffer by name: equal iff two organisms are bit-identical."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
