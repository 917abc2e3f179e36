"""The 2.5D classifier (v7, docs/variants.md §7.4): the S slices are the input channels of one 2D
EfficientNet; variants/v7.py assembles it."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from harness.models.blocks import FiLM


class SliceStackModel(nn.Module):
    """images (B,S,H,W) (S slices as channels), level (B,) -> {'logits': CE head (B,3), 'ordinal': (B,2)}."""

    # The new stem is not among them: it trains from the first step at the head LR, as in the notebook.
    backbone_groups = ("backbone_norm", "backbone_rest")

    def __init__(self, backbone: nn.Module, film: FiLM, classifier: nn.Module, ordinal_head: nn.Module):
        super().__init__()
        self.backbone, self.film = backbone, film
        self.classifier, self.ordinal_head = classifier, ordinal_head

    def forward(self, images: torch.Tensor, level: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.film(self.backbone(images), level)
        return {"logits": self.classifier(features), "ordinal": self.ordinal_head(features)}

    def param_groups(self) -> OrderedDict[str, list[nn.Parameter]]:
        """The notebook's groups: stem conv, stem BN, the rest of the backbone, FiLM gamma/beta, the two heads."""
        # timm's conv_stem/bn1(+SiLU)/blocks/conv_head/bn2 are torchvision's features[0][0]/[0][1:]/[1:]
        rest = [p for name, p in self.backbone.named_parameters() if not name.startswith(("conv_stem.", "bn1."))]
        return OrderedDict([
            ("stem", list(self.backbone.conv_stem.parameters())),
            ("backbone_norm", list(self.backbone.bn1.parameters())),
            ("backbone_rest", rest),
            ("level_gamma", list(self.film.gamma.parameters())),
            ("level_beta", list(self.film.beta.parameters())),
            ("classifier", list(self.classifier.parameters())),
            ("ordinal_head", list(self.ordinal_head.parameters())),
        ])


def slice_stem(rgb_stem: nn.Conv2d, num_slices: int, side_scale: float) -> nn.Conv2d:
    """A num_slices-channel stem initialised from an RGB one: centre-1, centre, centre+1 = R, G, B kernels;
    every other slice = side_scale x the kernel's mean over R, G, B."""
    if num_slices < 3:
        raise ValueError(f"the slice stem needs at least 3 slices, got {num_slices}")
    # the notebook's torchvision stem: symmetric padding 1 (timm's tf_ stem pads TF-'same')
    stem = nn.Conv2d(num_slices, rgb_stem.out_channels, kernel_size=3, stride=2, padding=1, bias=False)
    rgb = rgb_stem.weight.detach()
    centre = num_slices // 2
    with torch.no_grad():
        stem.weight.copy_((side_scale * rgb.mean(dim=1, keepdim=True)).expand_as(stem.weight))
        stem.weight[:, centre - 1:centre + 2] = rgb
    return stem
