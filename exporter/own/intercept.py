"""Run a module with every dropout site routed to a handler, and nothing random left unseen.

``routed(module, handler)`` yields the module wrapped so that, while it runs, a torch function
mode sees each dropout call: ``F.dropout``/``dropout1d``/``2d``/``3d`` (as ``nn.Dropout*`` and
user code call them), their ``torch.*`` kernels, the attention-weight dropout of
``F.scaled_dot_product_attention(dropout_p=…)`` and of ``nn.MultiheadAttention``, and dropnet's own
``Dropout`` (whose forward is redirected). An active call (training and p > 0) becomes
``handler(index, call, x)``, numbered in call order. With ``sampling=True`` the module runs as
in eval mode except that its dropout is active: every module is put in training mode except
normalisation layers (running statistics) and RReLU, so ``training=self.training`` holds where
dropout is called. Alpha dropout, random ops (``torch.rand*``, ``bernoulli_``…) and, without
``sampling``, any active dropout are refused with the module path: they would make the sample
something other than the eval module with masked dropout, or the eval module random.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from dropnet.core.errors import ModelPackageError
from dropnet.exporter.own.attention import attention_with_dropout
from dropnet.exporter.own.sites import Granularity, SiteCall
from dropnet.trainer.dropout import Dropout as DropnetDropout


class SiteHandler(Protocol):
    """What an active dropout site returns instead of its dropout."""

    def __call__(self, index: int, call: SiteCall, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class _Signature:
    """How to read a dropout function's arguments."""

    kind: str
    granularity: Granularity
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    alpha: bool = False


_F_ARGS = ("input", "p", "training", "inplace")
_KERNEL_ARGS = ("input", "p", "train")
_DROPOUTS: dict[Callable[..., Any], _Signature] = {
    F.dropout: _Signature("dropout", Granularity.ELEMENT, _F_ARGS, (0.5, True, False)),
    F.dropout1d: _Signature("dropout1d", Granularity.CHANNEL, _F_ARGS, (0.5, True, False)),
    F.dropout2d: _Signature("dropout2d", Granularity.CHANNEL, _F_ARGS, (0.5, True, False)),
    F.dropout3d: _Signature("dropout3d", Granularity.CHANNEL, _F_ARGS, (0.5, True, False)),
    F.alpha_dropout: _Signature("alpha_dropout", Granularity.ELEMENT, _F_ARGS, (0.5, False, False), alpha=True),
    F.feature_alpha_dropout: _Signature(
        "feature_alpha_dropout", Granularity.CHANNEL, _F_ARGS, (0.5, False, False), alpha=True
    ),
    torch.dropout: _Signature("dropout", Granularity.ELEMENT, _KERNEL_ARGS, ()),
    torch.dropout_: _Signature("dropout", Granularity.ELEMENT, _KERNEL_ARGS, ()),
    torch.feature_dropout: _Signature("feature_dropout", Granularity.CHANNEL, _KERNEL_ARGS, ()),
    torch.feature_dropout_: _Signature("feature_dropout", Granularity.CHANNEL, _KERNEL_ARGS, ()),
    torch.alpha_dropout: _Signature("alpha_dropout", Granularity.ELEMENT, _KERNEL_ARGS, (), alpha=True),
    torch.alpha_dropout_: _Signature("alpha_dropout", Granularity.ELEMENT, _KERNEL_ARGS, (), alpha=True),
    torch.feature_alpha_dropout: _Signature(
        "feature_alpha_dropout", Granularity.CHANNEL, _KERNEL_ARGS, (), alpha=True
    ),
    torch.feature_alpha_dropout_: _Signature(
        "feature_alpha_dropout", Granularity.CHANNEL, _KERNEL_ARGS, (), alpha=True
    ),
}
_IN_PLACE = (torch.dropout_, torch.feature_dropout_)
_RANDOM = {
    getattr(owner, name): f"{prefix}.{name}"
    for owner, prefix, names in (
        (torch, "torch", ("rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm",
                          "bernoulli", "normal", "poisson", "multinomial")),
        (torch.Tensor, "Tensor", ("bernoulli", "bernoulli_", "uniform_", "normal_", "random_", "exponential_",
                                  "geometric_", "cauchy_", "log_normal_", "multinomial")),
        (F, "F", ("gumbel_softmax", "fractional_max_pool2d", "fractional_max_pool3d")),
    )
    for name in names
}
"""Random functions, by their name in messages."""
_RANDOM_IN_TRAINING = {F.rrelu: ("F.rrelu", 3), torch.rrelu: ("torch.rrelu", 3)}
"""Functions that are random when their ``training`` argument (at this position) is true."""
_DROPOUT_MODULES = (nn.modules.dropout._DropoutNd, DropnetDropout)
"""Modules that are a site themselves (named by their own path)."""
_EVAL_ONLY = (nn.modules.batchnorm._NormBase, nn.RReLU)
"""Modules kept in eval mode while sampling: normalisation with running statistics, RReLU."""
_ROUTING_LOCK = threading.RLock()
"""Held while F.dropout / F.scaled_dot_product_attention are swapped (see _Interceptor._inner_calls_routed)."""
ALPHA_REASON = (
    "alpha dropout sets dropped units to SELU's saturation value and renormalises with an affine map; "
    "dropnet's sites are multiplicative keep masks, so it cannot be sampled faithfully"
)


class _Interceptor(TorchFunctionMode):
    """The function mode: knows the module running each call and numbers the active dropout sites."""

    def __init__(self, root: nn.Module, handler: SiteHandler | None) -> None:
        super().__init__()
        self._handler = handler
        self._names = {id(module): name for name, module in root.named_modules()}
        self._stack: list[nn.Module] = [root]
        self._count = 0
        self._functional: dict[tuple[int, str], int] = {}

    def start(self) -> None:
        """Begin a forward pass: site numbering from 0."""
        self._stack[1:] = []
        self._count = 0
        self._functional.clear()

    def push(self, module: nn.Module, *_: object) -> None:
        self._stack.append(module)

    def pop(self, module: nn.Module, *_: object) -> None:
        if len(self._stack) > 1 and self._stack[-1] is module:
            self._stack.pop()

    def depth(self) -> int:
        """Modules running, the root included."""
        return len(self._stack)

    def where(self) -> str:
        """The innermost running module, for messages."""
        module = self._stack[-1]
        return f"{self._names.get(id(module), '?') or '<root>'} ({type(module).__name__})"

    def call(self, kind: str, retain: float, flavour: str, granularity: Granularity) -> SiteCall:
        """A site call by the innermost running module; dropout inside attention is of kind "attention"."""
        module = self._stack[-1]
        if isinstance(module, nn.MultiheadAttention):
            kind = "attention"
        path = self._names.get(id(module), "?")
        if not isinstance(module, _DROPOUT_MODULES):
            key = (id(module), kind)
            self._functional[key] = self._functional.get(key, -1) + 1
            path = f"{path}/{kind}[{self._functional[key]}]" if path else f"{kind}[{self._functional[key]}]"
        return SiteCall(path, type(module).__name__, kind, retain, flavour, granularity)

    def site(self, call: SiteCall, x: torch.Tensor) -> torch.Tensor:
        """An active site: the handler's value (refused when there is no handler: eval mode)."""
        if self._handler is None:
            raise ModelPackageError(
                f"{self.where()} applies {call.kind} (p = {1 - call.retain:g}) in eval mode, so the eval-mode "
                "module is random; expected dropout only while training (training=self.training, or "
                "dropout_p=self.p if self.training else 0.0)"
            )
        index, self._count = self._count, self._count + 1
        return self._handler(index, call, x)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _DROPOUTS:
            return self._dropout(func, args, kwargs)
        if func is F.scaled_dot_product_attention:
            return self._attention(func, args, kwargs)
        if func is F.multi_head_attention_forward:
            with self._inner_calls_routed():
                return func(*args, **kwargs)
        name = _RANDOM.get(func) or _random_in_training(func, args, kwargs)
        if name is not None:
            raise ModelPackageError(
                f"{self.where()} calls the random function {name}: only dropout can be sampled from the "
                "seed input, so the exported graphs could not reproduce this module; expected no randomness "
                "in eval mode other than dropout"
            )
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def _inner_calls_routed(self) -> Iterator[None]:
        """Route the dropout and attention that F.multi_head_attention_forward calls to this mode.

        A function mode does not see the calls made inside a Python-level torch function it handles,
        so the module globals that function calls are swapped for the duration of the call.
        The swap is process-wide, so it is made under a lock (one export routes at a time, and each
        restores the true originals), and other threads calling F.dropout meanwhile get the original.
        """
        with _ROUTING_LOCK:
            owner = threading.get_ident()
            dropout, attention = F.dropout, F.scaled_dot_product_attention

            def routed_dropout(*args: Any, **kwargs: Any) -> torch.Tensor:
                if threading.get_ident() != owner:
                    return dropout(*args, **kwargs)
                return self._dropout(dropout, args, kwargs)

            def routed_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
                if threading.get_ident() != owner:
                    return attention(*args, **kwargs)
                return self._attention(attention, args, kwargs)

            F.dropout, F.scaled_dot_product_attention = routed_dropout, routed_attention  # type: ignore[assignment]
            try:
                yield
            finally:
                F.dropout, F.scaled_dot_product_attention = dropout, attention  # type: ignore[assignment]

    def _dropout(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> torch.Tensor:
        signature = _DROPOUTS[func]
        bound = dict(zip(signature.names[1:], signature.defaults)) | dict(zip(signature.names, args)) | kwargs
        x, p, training = bound["input"], bound["p"], bound[signature.names[2]]
        if not training or p == 0:
            return x
        if signature.alpha:
            raise ModelPackageError(f"{self.where()} uses {signature.kind} (p = {p:g}): {ALPHA_REASON}; refused")
        if p >= 1:
            raise ModelPackageError(f"{self.where()} applies {signature.kind} with p = {p:g}; expected p < 1")
        out = self.site(self.call(signature.kind, 1.0 - float(p), "inverted", signature.granularity), x)
        return x.copy_(out) if bound.get("inplace") or func in _IN_PLACE else out

    def _attention(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> torch.Tensor:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        bound = dict(zip(names, args)) | kwargs
        p = float(bound.pop("dropout_p", 0.0))
        if p == 0:
            return func(*args, **kwargs)
        if p >= 1:
            raise ModelPackageError(f"{self.where()} applies attention dropout with p = {p:g}; expected p < 1")
        call = self.call("attention", 1.0 - p, "inverted", Granularity.ELEMENT)
        return attention_with_dropout(lambda weights: self.site(call, weights), **bound)


def _random_in_training(func: Callable[..., Any], args: tuple, kwargs: dict) -> str | None:
    """The name of ``func`` if it is one of :data:`_RANDOM_IN_TRAINING` called with training true."""
    if func not in _RANDOM_IN_TRAINING:
        return None
    name, position = _RANDOM_IN_TRAINING[func]
    return name if kwargs.get("training", args[position] if len(args) > position else False) else None


class RoutedModule(nn.Module):
    """``module`` whose forward runs under the interceptor (the wrapper torch.onnx exports)."""

    def __init__(self, module: nn.Module, interceptor: _Interceptor) -> None:
        super().__init__()
        self.module = module
        self._interceptor = interceptor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._interceptor.start()
        with self._interceptor:
            return self.module(x)

    def failed_in(self) -> str | None:
        """The submodule the last forward stopped in, None if it completed or stopped in the root."""
        return self._interceptor.where() if self._interceptor.depth() > 1 else None


@contextlib.contextmanager
def routed(module: nn.Module, handler: SiteHandler | None, *, sampling: bool) -> Iterator[RoutedModule]:
    """``module`` with its dropout routed to ``handler`` (see the module docstring); restored on exit.

    ``sampling=False`` runs the eval-mode module and refuses any active dropout (``handler`` unused).
    """
    interceptor = _Interceptor(module, handler if sampling else None)
    modes = {sub: sub.training for sub in module.modules()}
    hooks = []
    patched: list[nn.Module] = []
    try:
        for sub in module.modules():
            sub.training = sampling and not isinstance(sub, _EVAL_ONLY)
            if sub is not module:
                hooks += [sub.register_forward_pre_hook(interceptor.push), sub.register_forward_hook(interceptor.pop)]
            if sampling and isinstance(sub, DropnetDropout) and sub.retain < 1.0:
                sub.forward = _dropnet_site(interceptor, sub)  # type: ignore[method-assign]
                patched.append(sub)
        yield RoutedModule(module, interceptor)
    finally:
        for hook in hooks:
            hook.remove()
        for sub in patched:
            del sub.forward
        for sub, training in modes.items():
            sub.training = training


def _dropnet_site(interceptor: _Interceptor, module: DropnetDropout) -> Callable[[torch.Tensor], torch.Tensor]:
    """Forward of a dropnet Dropout while sampling: its site, in its own flavour."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        call = interceptor.call(f"dropnet-{module.flavour}", module.retain, module.flavour, Granularity.ELEMENT)
        return interceptor.site(call, x)

    return forward
