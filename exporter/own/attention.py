"""Scaled dot-product attention written out, so that its dropout on the attention weights is a site.

torch.onnx drops ``dropout_p`` of ``F.scaled_dot_product_attention`` silently (the fused op has
no dropout in ONNX). Where a site is sampled, the attention is computed here instead, as
PyTorch documents its math: softmax(q·kᵀ·scale + mask) with dropout on the weights, times v.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def attention_with_dropout(
    drop: Callable[[torch.Tensor], torch.Tensor],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with ``drop`` applied to the attention weights."""
    if enable_gqa and key.size(-3) != query.size(-3):
        groups = query.size(-3) // key.size(-3)
        key, value = key.repeat_interleave(groups, -3), value.repeat_interleave(groups, -3)
    factor = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * factor
    if is_causal:
        causal = torch.ones(query.size(-2), key.size(-2), dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return drop(torch.softmax(scores, dim=-1)) @ value
