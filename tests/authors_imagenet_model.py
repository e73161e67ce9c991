"""An independent re-implementation of the module tree of the authors' ImageNet script
(``YY_ImageNet.py``, the model behind the paper's 66.49%), with *their* module names.

Written from the script's structure: ``yingyang.ying.0.<k>`` / ``yingyang.yang.0.<k>`` (one stage
per branch), ``reduction.<stage>.<k>``, ``head.2`` / ``head.5``; Residual ``conv1, bn1, conv2, bn2,
conv3`` (the biased 1x1 shortcut); MBConv ``bn, expand_conv.{0,1}, dw_conv.{0,1}, se.gate.{1,3},
out_conv.{0,1}, proj`` (a biased 1x1 conv where the width changes at stride 1, ``proj.1`` after a
max-pool at stride 2). GELU everywhere, hardsigmoid SE gate, red Yin input,
``Y1*(1-Y) + Y1 - Y`` fusion (Y1 Yang, Y Yin). Its ``MBConv.forward`` computes ``self.bn(x)`` and
then overwrites the result with ``self.expand_conv(x)``: the input BN's statistics update in
training but its output never reaches the network. The script builds with lazy modules; the
channel counts are spelled out here instead (same parameters once materialised).
"""
import torch.nn.functional as F
from torch import nn


class ScriptResidual(nn.Module):
    def __init__(self, c_in, c, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.conv3 = nn.Conv2d(c_in, c, 1, stride)
        self.bn1 = nn.BatchNorm2d(c)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.gelu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.gelu(self.conv3(x) + y)


class ScriptSE(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(d, d // 4, 1), nn.GELU(),
                                  nn.Conv2d(d // 4, d, 1), nn.Hardsigmoid())

    def forward(self, x):
        return x * self.gate(x.mean((2, 3), keepdim=True))


class ScriptMBConv(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        h = 4 * c_out
        self.bn = nn.BatchNorm2d(c_in)
        self.expand_conv = nn.Sequential(nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.GELU())
        self.dw_conv = nn.Sequential(nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                     nn.GELU())
        self.dropout = nn.Dropout(0.0)
        self.se = ScriptSE(h)
        self.out_conv = nn.Sequential(nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        if stride > 1:
            self.proj = nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.Conv2d(c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.proj = nn.Conv2d(c_in, c_out, 1)
        else:
            self.proj = nn.Identity()

    def forward(self, x):
        out = self.bn(x)           # computed (running statistics update in training) ...
        out = self.expand_conv(x)  # ... and discarded, as in the script
        out = self.se(self.dropout(self.dw_conv(out)))
        return self.out_conv(out) + self.proj(x)


class ScriptYinYang(nn.Module):
    def __init__(self, c=16, inc=2):
        super().__init__()
        self.ying = nn.Sequential(nn.Sequential(
            ScriptResidual(1, c), ScriptMBConv(c, c + inc), ScriptMBConv(c + inc, c + 2 * inc),
            ScriptMBConv(c + 2 * inc, c + 3 * inc, stride=2)))
        self.yang = nn.Sequential(nn.Sequential(
            ScriptResidual(3, c), ScriptMBConv(c, c + inc, stride=2), ScriptMBConv(c + inc, c + 2 * inc),
            ScriptMBConv(c + 2 * inc, c + 3 * inc)))

    def forward(self, x):
        y = self.ying(x[:, 0:1])
        y1 = self.yang(x)
        return y1 * (1 - y) + y1 - y


class ScriptImageNetYYNet(nn.Module):
    """``YingYangNet16(num_classes=1000)`` of the script: stem width 16, 4 reduction stages from 64."""

    def __init__(self, num_classes=1000, inc=2):
        super().__init__()
        self.yingyang = ScriptYinYang(16, inc)
        stages, c_prev = [], 16 + 3 * inc
        for s in range(4):
            c = 64 + inc * s
            stages.append(nn.Sequential(ScriptResidual(c_prev, c, 2), ScriptMBConv(c, c + inc),
                                        ScriptMBConv(c + inc, c + 2 * inc)))
            c_prev = c + 2 * inc
        self.reduction = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(c_prev, num_classes // 2),
                                  nn.GELU(), nn.Dropout(0.0), nn.Linear(num_classes // 2, num_classes))

    def forward(self, x):
        return self.head(self.reduction(self.yingyang(x)))
