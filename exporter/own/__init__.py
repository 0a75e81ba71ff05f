"""Your own PyTorch model: any nn.Module with dropout to deterministic.onnx and mc.onnx.

Sites: ``nn.Dropout``, ``nn.Dropout1d/2d/3d`` (one decision per row and channel), ``F.dropout``
and ``F.dropout1d/2d/3d`` called with ``training=self.training``, dropnet's ``Dropout`` (paper,
inverted, gaussian), and the attention-weight dropout of ``nn.MultiheadAttention`` /
``nn.Transformer*Layer`` / ``F.scaled_dot_product_attention(dropout_p=…)``, which torch.onnx
alone drops without a word. Alpha dropout, other randomness, and other differences between the
module's training and eval modes are refused, naming the module.

Contract: sample t of mc.onnx is the module in eval mode (batch norm on running statistics) with
every site active using the masks the graph drew from the counter-based hash of (row seed, site,
sample, unit) of dropnet.exporter.rng — PyTorch's scaling 1/(1-p) where the dropout is PyTorch's —
so a row's samples depend on its input and its seed alone. deterministic.onnx is the eval-mode
module. Inputs and outputs are those of dropnet's own packages (dropnet.core.outputs), with ``x``
float32 or int64 [B, …] and a dynamic batch axis.
"""

from dropnet.exporter.own.build import OwnGraphs, build_own_graphs
from dropnet.exporter.own.discover import Tolerance
from dropnet.exporter.own.gates import GateReport
from dropnet.exporter.own.sites import Granularity, SiteInfo

__all__ = ["GateReport", "Granularity", "OwnGraphs", "SiteInfo", "Tolerance", "build_own_graphs"]
