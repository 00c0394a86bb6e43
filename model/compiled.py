"""``torch.compile`` with a way back: a module whose compilation fails runs eagerly instead.

Compilation happens lazily, at the first call (and again for each new input shape), so a failure
surfaces as an exception from the forward pass, possibly hours into a cluster job. A training run
should not die of it: the step runs eagerly from then on, after one warning naming the module and
the compiler's complaint. An exception on a later call that does not come from the compiler stack
is the model's own and propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILER_MODULES = ("torch._dynamo", "torch._inductor", "torch._functorch")


def should_compile(setting: str, device: torch.device) -> bool:
    """``optim.compile``: auto compiles on CUDA only; always/never force it. On CPU the inductor
    builds C++ kernels for every graph, forward and backward: minutes before the first step (over
    three for the test-sized discriminator alone on a busy 2-core machine), more than a CPU run
    of this project's size could win back."""
    if setting not in ("auto", "always", "never"):
        raise ValueError(f"optim.compile must be auto, always or never, got {setting!r}")
    return setting == "always" or (setting == "auto" and device.type == "cuda")


def _from_compiler(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(COMPILER_MODULES)


class CompiledOrEager:
    """Calls ``torch.compile(module)``; on a compiler failure, warns once and calls ``module``."""

    def __init__(
        self,
        module: nn.Module,
        name: str,
        mode: str = "default",
        compiler: Callable[..., Callable[..., Any]] | None = None,
    ) -> None:
        self.module, self.name, self.mode = module, name, mode
        self._compiled: Callable[..., Any] | None = (compiler or torch.compile)(module, mode=mode)
        self._calls = 0

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is not None:
            first = self._calls == 0
            self._calls += 1
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:
                # The first call is where compilation happens: any failure there gets one eager
                # retry (a genuine model error then raises again, from eager code).
                if not (first or _from_compiler(exc)):
                    raise
                log.warning(
                    "torch.compile failed for %s, running it eagerly: %s: %s",
                    self.name,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
                )
                self._compiled = None
        return self.module(*args, **kwargs)


@overload
def maybe_compile(
    module: nn.Module, name: str, enabled: bool, mode: str = "default"
) -> Callable[..., Any]: ...
@overload
def maybe_compile(module: None, name: str, enabled: bool, mode: str = "default") -> None: ...
@overload
def maybe_compile(
    module: nn.Module | None, name: str, enabled: bool, mode: str = "default"
) -> Callable[..., Any] | None: ...
def maybe_compile(
    module: nn.Module | None, name: str, enabled: bool, mode: str = "default"
) -> Callable[..., Any] | None:
    if module is None or not enabled:
        return module
    return CompiledOrEager(module, name, mode)
