"""ModelConfig -> network + preconditioning = the denoiser a run serves."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import Config, check, check_choice
from .nets import PRESETS, build_net
from .precond import PARAMETERIZATIONS, Denoiser
from .schedules import VP_TABLES, alpha_bar_to_sigma, vp_table


@dataclass
class ModelConfig(Config):
    kind: str  # "image", "vector" or "text"
    in_shape: list
    preset: str = "small"
    parameterization: str = "edm"
    sigma_data: float = 0.5
    num_classes: int = 0  # > 0: class-conditional (index num_classes is the null label for guidance)
    time_conditioning: str = "log"  # "log": c_noise = ln(sigma)/4; "vp": fractional timestep of vp_schedule
    vp_schedule: str = "linear"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    dropout: float = 0.0
    overrides: dict = field(default_factory=dict)  # explicit network arguments on top of the preset
    augment_dim: int = 0  # > 0: the U-Net is conditioned on an augmentation vector (augment.py, "edm")
    # a diffusers scheduler's noise table (a model loaded from diffusers): {"alpha_bars": [...], "timestep_spacing",
    # "steps_offset"}; it replaces vp_schedule
    scheduler: dict | None = None
    vocab: int = 0  # text: the token ids of the data (the codec's), MASK being the next one
    never: list = field(default_factory=list)  # text: token ids the model never produces (UNK; PAD inside a window)

    def validate(self):
        check_choice("kind", self.kind, tuple(PRESETS))
        check_choice("preset", self.preset, PRESETS[self.kind])
        check(self.kind != "text" or self.vocab >= 3, f"a text model needs its vocabulary size, got {self.vocab}")
        check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        check_choice("time_conditioning", self.time_conditioning, ("log", "vp"))
        check_choice("vp_schedule", self.vp_schedule, VP_TABLES)
        check(self.sigma_data > 0, f"sigma_data must be positive, got {self.sigma_data}")
        check(0 < self.sigma_min < self.sigma_max, f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")

    def pick_labels(self, n: int, seed: int = 0, label=None):
        """Labels for sampling a conditional model: the chosen class, or uniform random classes (seeded); None for an
        unconditional model."""
        check(isinstance(seed, int) and seed >= 0, f"seed must be >= 0, got {seed}", "seed")
        if self.num_classes == 0:
            check(label is None, "this model is unconditional: label needs a model trained with class labels", "label")
            return None
        if label is not None:
            check(isinstance(label, int) and 0 <= label < self.num_classes,
                  f"label {label} does not exist; this model has classes 0..{self.num_classes - 1}", "label")
            return torch.full((n,), label, dtype=torch.long)
        return torch.randint(0, self.num_classes, (n,), generator=torch.Generator().manual_seed(seed))

    def alpha_bars(self) -> torch.Tensor | None:
        """The VP table the network is conditioned on (its timesteps), or None for a sigma-conditioned network."""
        if self.scheduler is not None:
            return torch.tensor(self.scheduler["alpha_bars"], dtype=torch.float64)
        return vp_table(self.vp_schedule) if self.time_conditioning == "vp" else None

    def use_vp_range(self):
        """Set the sigma range to the VP table's (for models conditioned on its timesteps)."""
        s = alpha_bar_to_sigma(vp_table(self.vp_schedule))
        self.sigma_min, self.sigma_max = float(s[0]), float(s[-1])


def build_denoiser(cfg: ModelConfig) -> Denoiser:
    if cfg.kind == "text":  # masked diffusion: the network's log-probabilities of the clean tokens
        from .masked import TokenDenoiser

        net = build_net("text", cfg.preset, in_shape=cfg.in_shape, num_classes=cfg.num_classes, dropout=cfg.dropout,
                        overrides=cfg.overrides, vocab=cfg.vocab)
        return TokenDenoiser(net, cfg.vocab, forbid=cfg.never)
    vp = cfg.time_conditioning == "vp"
    net = build_net(cfg.kind, cfg.preset, in_shape=cfg.in_shape, num_classes=cfg.num_classes,
                    emb_scale=1.0 if vp else 250.0, dropout=cfg.dropout, overrides=cfg.overrides,
                    augment_dim=cfg.augment_dim)
    return Denoiser(net, cfg.parameterization, cfg.sigma_data, alpha_bars=cfg.alpha_bars(), sigma_min=cfg.sigma_min,
                    sigma_max=cfg.sigma_max)
