"""An independent re-implementation of the authors' CIFAR YYNet with *their* module names.

Written from the layout in shared/spec/YYNET.md (``yingyang.ying.0.<k>``, ``conv.<idx>``,
``conv.8.gate.1``, ``proj.1``, ``head.2``, ``cls``), with SiLU, sigmoid SE gate, mean Yin input
and ``mul`` fusion. The converter test loads random weights into it and checks that yyfast gives
the same eval outputs after ``convert_original_checkpoint``.
"""
import torch
from torch import nn


class AuthorsSE(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(d, d // 4, 1), nn.SiLU(),
                                  nn.Conv2d(d // 4, d, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class AuthorsResidual(nn.Module):
    def __init__(self, c_in, c, stride):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in, c, 3, stride, 1), nn.BatchNorm2d(c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c))
        self.conv2 = nn.Conv2d(c_in, c, 1, stride)

    def forward(self, x):
        return nn.functional.silu(self.conv2(x) + self.conv(x))


class AuthorsMBConv(nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        h = 4 * c
        self.conv = nn.Sequential(
            nn.BatchNorm2d(c), nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.SiLU(),
            nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.SiLU(), nn.Dropout(0.0),
            AuthorsSE(h), nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
        self.proj = nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.Conv2d(c, c, 1, bias=False)) if stride > 1 else None

    def forward(self, x):
        return self.conv(x) + (self.proj(x) if self.proj is not None else x)


class AuthorsYinYang(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ying = nn.Sequential(nn.Sequential(AuthorsResidual(1, c, 1), AuthorsMBConv(c, 1), AuthorsMBConv(c, 1),
                                                AuthorsMBConv(c, 2)))
        self.yang = nn.Sequential(nn.Sequential(AuthorsResidual(3, c, 1), AuthorsMBConv(c, 2), AuthorsMBConv(c, 1),
                                                AuthorsMBConv(c, 1)))

    def forward(self, x):
        return self.yang(x) * self.ying(x.mean(1, keepdim=True))


class AuthorsCifarYYNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.yingyang = AuthorsYinYang(c)
        self.reduction = nn.Sequential(
            nn.Sequential(AuthorsResidual(c, c, 2), AuthorsMBConv(c, 2), AuthorsMBConv(c, 1)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 40), nn.SiLU(), nn.Dropout(0.0))
        self.cls = nn.Linear(40, 10)

    def forward(self, x):
        return self.cls(self.head(self.reduction(self.yingyang(x))))


def randomise_(model: nn.Module) -> nn.Module:
    """Random weights and BN statistics (not the init values), so a wrong mapping shows."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                t.uniform_(-0.3, 0.3)
            else:
                t.copy_(torch.randn_like(t) * 0.3)
    return model
