"""Networks F(x, c_noise, class_labels) that precond.Denoiser turns into denoisers, and their size presets."""
from __future__ import annotations

from ..errors import DiffusekitError
from .mlp import ResidualMLP
from .transformer import TokenTransformer
from .unet import UNet

# Named size presets. Image presets are for 8..64 px; choose by budget (docs/training.md).
UNET_PRESETS = {
    "tiny": dict(channels=16, channel_mults=(1, 2), num_res_blocks=1, attn_resolutions=()),
    "small": dict(channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7, 4)),
    "base": dict(channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7, 4)),
    "large": dict(channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16, 8, 7, 4)),
}
TRANSFORMER_PRESETS = {  # masked diffusion of text (and its autoregressive baseline)
    "tiny": dict(width=64, depth=2, heads=4),
    "small": dict(width=128, depth=4, heads=4),
    "base": dict(width=256, depth=6, heads=8),
    "large": dict(width=512, depth=8, heads=8),
}
MLP_PRESETS = {
    "tiny": dict(width=64, depth=2),
    "small": dict(width=128, depth=3),
    "base": dict(width=256, depth=4),
    "large": dict(width=512, depth=6),
}


PRESETS = {"image": UNET_PRESETS, "vector": MLP_PRESETS, "text": TRANSFORMER_PRESETS}


def scaled_preset(preset: str, size) -> dict:
    """A U-Net preset's levels and attention for images over 28 px (height x width): more down-sampling levels
    (multiplier as the last) while the smallest feature map is over 8 px high and both sides still divide, and
    attention at every level of 16 px high or less (none for tiny). Up to 28 px the preset is kept as it is."""
    if preset not in UNET_PRESETS or min(size) <= 28:
        return {}
    (H, W), p = size, UNET_PRESETS[preset]
    mults = list(p["channel_mults"])
    while H // 2 ** (len(mults) - 1) > 8 and H % 2 ** len(mults) == 0 and W % 2 ** len(mults) == 0:
        mults.append(mults[-1])
    heights = [H // 2 ** i for i in range(len(mults))]
    return {"channel_mults": mults, "attn_resolutions": [h for h in heights if h <= 16] if p["attn_resolutions"] else []}


def build_net(kind: str, preset: str, *, in_shape, num_classes=0, emb_scale=250.0, dropout=0.0, overrides=None,
              augment_dim=0, vocab=0):
    """Build a U-Net ('image'), residual MLP ('vector') or token transformer ('text': `vocab` token ids and a MASK)
    from a preset plus explicit overrides. augment_dim: the length of the augmentation vector the U-Net is conditioned
    on (augment.py; 0: none)."""
    presets = PRESETS[kind]
    if preset not in presets:
        raise DiffusekitError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
    kw = dict(presets[preset], **(overrides or {}))
    if kind == "image":
        return UNet(in_channels=in_shape[0], image_size=tuple(in_shape[1:]), num_classes=num_classes, emb_scale=emb_scale,
                    dropout=dropout, augment_dim=augment_dim, **kw)
    if kind == "text":
        return TokenTransformer(vocab=vocab + 1, length=in_shape[0], num_classes=num_classes, dropout=dropout, **kw)
    return ResidualMLP(dim=in_shape[0], num_classes=num_classes, emb_scale=emb_scale, dropout=dropout, **kw)
