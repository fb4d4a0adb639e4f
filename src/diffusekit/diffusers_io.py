"""diffusers folders as runs, and runs as diffusers folders (local files only, never the hub).

Reading: a folder written by diffusers' `save_pretrained`, either a DDPM/DDIM pipeline (model_index.json, unet/,
scheduler/) or a bare `UNet2DModel` (config.json and its weights) with its scheduler_config.json beside it or in
scheduler/, is a Run: the network is wrapped by `precond.from_diffusers` on the scheduler's own noise table (its
betas: linear, scaled_linear, squaredcos_cap_v2, trained_betas; any number of training steps), and every sampler,
restoration, likelihood and anomaly score serves it. The "timesteps" grid visits the timesteps that scheduler would.

Writing: `export_diffusers(run, out)` writes a DDIMPipeline folder that diffusers' `DiffusionPipeline.from_pretrained`
loads and samples. Its scheduler is diffusers' own DDIMScheduler on a table of noise levels spanning the run's range
(log-uniform in sigma); its network is `DiffusekitUNet` below, which diffusers imports by name from model_index.json
(diffusekit must be installed where the folder is loaded; nothing else needs importing). It answers the pipeline's
eps-prediction question with the run's own denoiser.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from .checkpoint import read_json
from .config import check
from .data.codecs import ImageCodec
from .errors import DiffusekitError
from .model import ModelConfig, build_denoiser
from .precond import from_diffusers
from .schedules import alpha_bar_to_sigma, sigma_to_alpha_bar

EXPORT_STEPS = 1000  # the exported table's training timesteps


def diffusers_parts(path: Path) -> tuple[Path, Path]:
    """(the UNet's folder, the scheduler's config file) of a diffusers folder, or a one-line error."""
    if (path / "model_index.json").is_file():
        try:
            index = read_json(path / "model_index.json")
        except ValueError as e:
            raise DiffusekitError(f"{path / 'model_index.json'} is not valid JSON: {e}") from None
        check(isinstance(index, dict) and "unet" in index and "scheduler" in index,
              f"{path} is a diffusers pipeline without a unet and a scheduler; diffusekit reads DDPM/DDIM pipelines")
        return path / "unet", path / "scheduler" / "scheduler_config.json"
    for sched in (path / "scheduler_config.json", path / "scheduler" / "scheduler_config.json"):
        if sched.is_file():
            return path, sched
    raise DiffusekitError(f"{path} holds a diffusers UNet but no scheduler_config.json beside it or in scheduler/: "
                          f"the noise table it was trained on is the scheduler's")


def load_diffusers(path, device="cpu"):
    """A diffusers folder as a Run (unconditional image models; sigma_data 1, the VP convention)."""
    from .run import Run

    path = Path(path)
    unet_dir, sched_path = diffusers_parts(path)
    try:
        kind = read_json(unet_dir / "config.json").get("_class_name")
        check(kind in NETWORKS, f"{unet_dir} holds a diffusers {kind}; diffusekit reads {' and '.join(NETWORKS)}")
        unet = NETWORKS[kind].from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
        sched_cfg = read_json(sched_path)
        scheduler = DDPMScheduler.from_config(sched_cfg)  # only its noise table is used: the sampler is ours
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise DiffusekitError(f"cannot load the diffusers model in {path}: {str(e).splitlines()[0]}") from None
    check(kind != "UNet2DModel" or (unet.config.num_class_embeds is None and unet.config.class_embed_type is None),
          f"{path} is a class-conditional diffusers UNet; diffusekit reads unconditional ones")
    D = from_diffusers(unet, scheduler)
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    codec = ImageCodec(unet.config.in_channels, (h, w))
    mcfg = ModelConfig(kind="image", in_shape=[unet.config.in_channels, h, w], parameterization=D.parameterization,
                       sigma_data=1.0, time_conditioning="vp", sigma_min=D.sigma_min, sigma_max=D.sigma_max,
                       scheduler={"alpha_bars": scheduler.alphas_cumprod.double().tolist(),
                                  "timestep_spacing": sched_cfg.get("timestep_spacing", "leading"),
                                  "steps_offset": sched_cfg.get("steps_offset", 0)})
    config = {"model": mcfg.to_dict(), "codec": codec.to_dict(),
              "diffusers": {"unet": str(unet_dir), "scheduler": sched_cfg.get("_class_name")}}
    return Run(path, config, mcfg, codec, D.eval().requires_grad_(False).to(device), 0, [], device)


def export_table(sigma_min: float, sigma_max: float, T: int = EXPORT_STEPS) -> list[float]:
    """Betas of T timesteps whose noise levels are log-uniform from sigma_min to sigma_max."""
    sigma = torch.logspace(math.log10(sigma_min), math.log10(sigma_max), T, dtype=torch.float64)
    ab = sigma_to_alpha_bar(sigma)
    return (1 - ab / torch.cat([ab.new_ones(1), ab[:-1]])).tolist()


class DiffusekitUNet(ModelMixin, ConfigMixin):
    """A diffusekit network as the eps-prediction network of a diffusers VP pipeline: at timestep t of the table
    (trained_betas, computed as diffusers' schedulers do), x_vp -> x_sigma = x_vp / sqrt(alpha_bar_t) ->
    eps = (x_sigma - D(x_sigma, sigma_t)) / sigma_t. A class-conditional run samples unconditionally here (the
    null label) unless class_labels are given."""

    @register_to_config
    def __init__(self, model: dict, trained_betas: list, in_channels: int, out_channels: int, sample_size):
        super().__init__()
        self.model_config = ModelConfig.from_dict(model)
        self.denoiser = build_denoiser(self.model_config)
        ab = torch.cumprod(1.0 - torch.tensor(trained_betas, dtype=torch.float32), 0)
        self.register_buffer("log_sigmas", alpha_bar_to_sigma(ab.double()).log(), persistent=False)

    def forward(self, sample, timestep, class_labels=None, return_dict: bool = True):
        # fractional timesteps (diffusekit's own samplers ask for any sigma) by log-sigma interpolation, as
        # precond.Denoiser maps sigma to timesteps
        t = torch.as_tensor(timestep, dtype=torch.float64, device=sample.device).reshape(-1)
        log_s = self.log_sigmas.to(sample.device)
        i = t.floor().long().clamp(0, len(log_s) - 2)
        sigma = ((1 - (t - i)) * log_s[i] + (t - i) * log_s[i + 1]).exp().reshape(-1, *[1] * (sample.ndim - 1))
        x = (sample.double() * (1 + sigma**2).sqrt()).to(sample.dtype)
        labels = class_labels
        if labels is None and self.model_config.num_classes:
            labels = torch.full((len(x),), self.model_config.num_classes, dtype=torch.long, device=x.device)
        s = sigma.reshape(-1).to(x.dtype)
        D = self.denoiser(x, s[0] if len(s) == 1 else s, labels)
        eps = (x.double() - D.double()) / sigma
        return UNet2DOutput(sample=eps.to(sample.dtype)) if return_dict else (eps.to(sample.dtype),)


NETWORKS = {"UNet2DModel": UNet2DModel, "DiffusekitUNet": DiffusekitUNet}


def export_diffusers(run, out) -> Path:
    """Write run (an image run) as a DDIMPipeline folder at out (which must not exist); returns out."""
    import diffusers

    out = Path(out)
    check(run.kind == "image", "diffusers pipelines generate images; this run models tables", "format")
    check(run.model_config.scheduler is None, f"{run.path} is a diffusers model already: copy its folder", "run")
    check(not out.exists(), f"{out} exists; export writes a new folder", "out")
    m = run.model_config
    betas = export_table(m.sigma_min, m.sigma_max)
    h, w = m.in_shape[1:]
    net = DiffusekitUNet(model=m.to_dict(), trained_betas=betas, in_channels=m.in_shape[0],
                         out_channels=m.in_shape[0], sample_size=h if h == w else [h, w])
    net.denoiser.net.load_state_dict(run.denoiser.net.state_dict())
    scheduler = DDIMScheduler(num_train_timesteps=len(betas), trained_betas=betas, clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing", prediction_type="epsilon")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        net.save_pretrained(tmp / "unet")
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / "model_index.json").write_text(json.dumps(
            {"_class_name": "DDIMPipeline", "_diffusers_version": diffusers.__version__,
             "unet": [__name__, "DiffusekitUNet"], "scheduler": ["diffusers", "DDIMScheduler"]}, indent=2))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
