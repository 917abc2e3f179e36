"""The per-slice feature extractor: a timm model with its classifier removed, never downloaded."""
from __future__ import annotations

import timm
from timm.models import load_state_dict as timm_load_state_dict
from torch import nn

from harness.core.config import ModelConfig
from harness.core.errors import UsageError


def create_backbone(cfg: ModelConfig, in_chans: int = 3) -> nn.Module:
    """timm `cfg.backbone` with num_classes=0 (exposes .num_features), random or from cfg.weights_file."""
    if not timm.is_model(cfg.backbone):
        raise UsageError(f"model.backbone={cfg.backbone!r} is not a timm model name")
    kwargs = dict(num_classes=0, drop_path_rate=cfg.drop_path_rate, in_chans=in_chans)
    if not cfg.pretrained:
        return timm.create_model(cfg.backbone, pretrained=False, **kwargs)
    if cfg.weights_file is None:
        raise UsageError(
            f"model.pretrained=true needs model.weights_file=<local {cfg.backbone} weights> "
            "(the harness never downloads); or set model.pretrained=false to train from random weights")
    path = str(cfg.weights_file)
    # timm's own local-file path (file= in the pretrained cfg): it reads .safetensors and torch
    # state dicts (unwrapping {'state_dict'|'model'|'*_ema': ...}, stripping 'module.'), drops the
    # checkpoint's classifier and adapts the stem to in_chans. Blanking url/hf_hub_id means no
    # remote source is even left to fall back on.
    overlay = dict(file=path, url="", hf_hub_id="", hf_hub_filename=None, source="")
    try:
        model = timm.create_model(cfg.backbone, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        state = timm_load_state_dict(path, weights_only=True)  # never unpickle code from a file
    except Exception as exc:  # unreadable file, shape mismatch, blocked pickle: all the user's file
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        # torch's load_state_dict error opens with a bare header line; the first detail says more
        reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
        raise UsageError(f"model.weights_file={path}: cannot load into {cfg.backbone} ({reason})") from None
    _check_keys(model, state, path, cfg.backbone)
    return model


def _check_keys(model: nn.Module, state: dict, path: str, name: str) -> None:
    """Refuse a file whose keys do not cover the backbone exactly (timm loads non-strictly here)."""
    # With num_classes=0 timm drops the checkpoint classifier and then loads with strict=False, so a
    # wrong file would otherwise leave layers at random init with only a log line.
    head = model.pretrained_cfg.get("classifier") or ()
    head = (head,) if isinstance(head, str) else tuple(head)
    expected = set(model.state_dict())
    found = {k for k in state if not any(k in (f"{h}.weight", f"{h}.bias") for h in head)}
    missing = sorted(k for k in expected - found if not k.endswith("num_batches_tracked"))
    unexpected = sorted(found - expected)
    if missing or unexpected:
        detail = "; ".join(f"{label} {len(keys)} keys, e.g. {keys[0]}"
                           for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        raise UsageError(f"model.weights_file={path}: does not match {name} ({detail})")
