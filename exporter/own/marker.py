"""The site marker: a torch custom op that torch.onnx exports as one node per dropout site.

While the module is traced for export, every dropout site returns ``dropout_site(x, index)``
instead of its dropout. The op is the identity in eager mode; torch.onnx translates it to a
``dropnet.DropoutSite`` node (custom domain, attribute ``index``) that no exporter or
onnxruntime pass knows, so none can fold or drop it. The graph rewriter then replaces each
marker by its mask subgraph (mc.onnx) or its eval-mode value (deterministic.onnx).
"""

from __future__ import annotations

import onnx.defs
import torch
from onnxscript.values import Op, Opset

DOMAIN = "dropnet"
OP_TYPE = "DropoutSite"
INDEX = "index"


@torch.library.custom_op(f"{DOMAIN}::dropout_site", mutates_args=())
def dropout_site(x: torch.Tensor, index: int) -> torch.Tensor:
    """Identity marking dropout site ``index``."""
    return x.clone()


@dropout_site.register_fake
def _(x: torch.Tensor, index: int) -> torch.Tensor:
    return torch.empty_like(x)


def _register_schema() -> onnx.defs.OpSchema:
    """The marker's ONNX schema (registered once per process; onnxscript needs it to emit the node)."""
    if not onnx.defs.has(OP_TYPE, DOMAIN):
        schema = onnx.defs.OpSchema(
            OP_TYPE,
            DOMAIN,
            1,
            doc="Marks a dropout site; dropnet replaces it before the graph is written.",
            inputs=[onnx.defs.OpSchema.FormalParameter("x", "T")],
            outputs=[onnx.defs.OpSchema.FormalParameter("y", "T")],
            type_constraints=[("T", ["tensor(float)"], "float32 activations")],
            attributes=[onnx.defs.OpSchema.Attribute(INDEX, onnx.defs.OpSchema.AttrType.INT, "site index")],
        )
        onnx.defs.register_schema(schema)
    return onnx.defs.get_schema(OP_TYPE, 1, DOMAIN)


_SITE_OP = Op(Opset(DOMAIN, 1), OP_TYPE, _register_schema())


def _translate(x: object, index: int) -> object:
    return _SITE_OP(x, index=index)


TRANSLATION_TABLE = {torch.ops.dropnet.dropout_site.default: _translate}
"""``custom_translation_table`` for torch.onnx.export."""
