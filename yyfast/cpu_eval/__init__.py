"""The float32 CPU eval machinery that ``optimize_for_inference``'s model and ``yyfast.YYNet``'s eval
forward share (issue 17): the memory arena (``arena``), the Winograd 3x3 convolution (``winograd``)
and the whole-MBConv-block op (``mbconv_op``), each a thin layer over an op of the ``yyfast._C``
extension, and each a no-op report (``available() == False``) where the extension is not built."""
from . import arena, mbconv_op, winograd

__all__ = ["arena", "mbconv_op", "winograd"]
