"""The training loop: AdamW with warm-up, gradient clipping, EMA with warm-up, bf16 autocast, gradient
accumulation, a step or wall-clock budget, CSV log, sample grids, atomic checkpoints, exact resume, and
data parallelism under torchrun (gloo on CPU, nccl on GPU; only rank 0 writes).

Exact resume and rank-independence come from one rule: everything random in step k (batch indices,
sigma, eps, label dropout) is drawn for the *global* batch from a generator seeded by (seed, k); each rank
then takes its slice. So a resumed run, or a run on W processes, sees the same numbers as one process.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .augment import AUGMENT_DIM, AUGMENTS, apply_augment, draw_augment
from .checkpoint import (load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, read_run_config,
                         remove_dead_writers, save_checkpoint, write_json_atomic,
                         write_text_atomic)
from .config import Config, check, check_choice
from .evaluate import Evaluator
from .data import NUMERIC_MAPS, Data, load_data, with_target
from .data.images import FITS, parse_size
from .errors import DiffusekitError
from .losses import (NOISES, OBJECTIVES, WEIGHTINGS, ConsistencyLoss, DiffusionLoss, TeacherPathLoss, check_q,
                     noise_distribution)
from .masked import MaskedDiffusionLoss
from .model import ModelConfig, build_denoiser
from .nets import UNET_PRESETS, scaled_preset
from .runtime import init_distributed, native_bf16, pick_device, seed_device
from .samplers import SampleConfig, ode_path, sample, sampling_defaults
from .viz import picture


@dataclass
class TrainConfig(Config):
    """Everything about a training run, saved in its config.json. None: the preset's or the data's own value."""
    data: str  # a data spec (`load_data`); `train` writes in-memory data into the run and names that file
    out: str
    preset: str = "small"
    # explicit network settings on top of the preset
    channels: int | None = None  # U-Net base channels or MLP width
    channel_mults: list | None = None  # U-Net, e.g. [1, 2, 2]
    num_res_blocks: int | None = None  # U-Net residual blocks per level, or MLP depth
    attn_resolutions: list | None = None  # U-Net self-attention resolutions, e.g. [14, 7] ([]: no attention)
    parameterization: str = "edm"  # eps | x0 | v | edm
    weighting: str = "auto"  # auto: the parameterization's own (eps-MSE, v-MSE, EDM; x0 -> EDM); min-snr; likelihood
    # lognormal (EDM) | loguniform (sigma_min..sigma_max; with weighting likelihood: maximum likelihood)
    # | vp (uniform timesteps of vp_schedule; timestep-conditioned net)
    noise: str = "lognormal"
    # diffusion (denoising score matching) | consistency (with init_from a diffusion run, a model that samples in 1-4
    # calls: losses.TeacherPathLoss or ConsistencyLoss by ct_target; `distill` sets it up)
    objective: str = "diffusion"
    ct_q: float = 4.0  # consistency, ct_target self: how close the compared levels are (r = t (1 - (1 + 8 sigmoid(-t)) / q))
    # consistency: what D(x_t, t) learns to match: self (ECT: its own output lower on the same noising path) | teacher
    # (the clean end of the init_from run's probability-flow path through x_t, losses.TeacherPathLoss)
    ct_target: str = "self"
    vp_schedule: str = "linear"
    p_mean: float = -1.2
    p_std: float = 1.2
    min_snr_gamma: float = 5.0
    sigma_data: float | None = None  # None: 0.5 for images in [-1, 1], 1.0 for standardized vectors
    image_size: int | str | list | None = None  # fit a folder's images to N, "WIDTHxHEIGHT" or [height, width]
    image_fit: str = "crop"  # crop (fill, cut the centre) | pad (fit inside, border colour around)
    class_cond: str = "auto"  # auto (when the data has labels) | on | off
    target: str | None = None  # a table's column used as the class label (data.with_target)
    # a table's numeric columns in model space: standard ((v - mean) / std) | quantile (through their empirical
    # distribution to a standard normal: repeated values come back exact; no likelihood in data units)
    numeric: str = "standard"
    label_dropout: float = 0.1
    dropout: float = 0.0
    batch_size: int = 128  # global batch, over all ranks and accumulation steps
    grad_accum: int = 1
    lr: float = 2e-3  # fine-tuning too: a tenth of it fine-tuned half as well (docs/training.md)
    warmup_steps: int = 200
    lr_decay_kimg: float = 0.0  # > 0: inverse square-root decay, lr * sqrt(lr_decay_kimg / kimg seen) past it (EDM2)
    # > 0: the learning rate falls linearly to 0 over this last fraction of the budget (steps, or this invocation's
    # minutes): warmup-stable-decay, which lets a fixed budget end at a low-noise optimum instead of mid-flight.
    # None: fill_recipe's choice for the run
    lr_decay_frac: float | None = None
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: none
    ema_halflife_kimg: float = 20.0
    ema_rampup: float = 0.05
    bf16: bool | None = None  # bf16 autocast; None: fill_recipe's choice for the run
    steps: int | None = None  # total optimizer steps
    minutes: float | None = None  # wall-clock budget of this invocation
    seed: int = 0
    log_every: int = 50
    sample_every: int = 0  # write a sample grid every N steps (0: only at the end)
    ckpt_every: int = 1000
    # a table: the share of its rows (seeded) kept out of training. Every eval_every steps the EMA model's denoising
    # loss on them is logged (eval.csv) and its lowest kept in best/, which sampling then uses; training stops once it
    # has not improved for as many steps as it took to reach it (at least HOLDOUT_PATIENCE): a small table is
    # otherwise learned by heart (docs/tables.md). None: the recipe's choice (fill_recipe)
    holdout: float | None = None
    # every N steps: evaluate the EMA model (held-out loss with holdout, else FCD of eval_samples samples; eval.csv),
    # keep the best in best/. None: HOLDOUT_EVERY with holdout, else 0 (never)
    eval_every: int | None = None
    eval_samples: int = 500
    eval_reference: str = ""  # data spec to evaluate against ("": the training data)
    device: str = "auto"
    # fine-tuning: start from this run's EMA weights (its network and preconditioning; new classes get fresh label
    # embeddings, classes it knows by name keep theirs)
    init_from: str | None = None
    augment: str = "off"  # off | flip | edm (augment.py: mirrored half of the time; edm also rotated, scaled, shifted)
    augment_p: float = 0.12  # edm: the probability of each of rotation, scaling and shifting
    checkpointing: bool = False  # gradient checkpointing of the U-Net's blocks: less memory, about 1/3 more compute
    tensorboard: bool = False  # also write log.csv's and eval.csv's columns and the sample grids to out/tensorboard

    def validate(self):
        self._read_saved_forms()
        check_choice("parameterization", self.parameterization, ("eps", "x0", "v", "edm"))
        check_choice("weighting", self.weighting, ("auto", *WEIGHTINGS))
        check_choice("noise", self.noise, NOISES)
        check_choice("objective", self.objective, OBJECTIVES)
        check_q(self.ct_q)
        check_choice("ct_target", self.ct_target, CT_TARGETS)
        check(self.ct_target == "self" or (self.objective == "consistency" and self.init_from), "ct_target teacher "
              "distils a trained run (init_from) into a consistency model (objective consistency)", "ct_target")
        check(self.weighting != "likelihood" or self.noise == "loguniform",
              "weighting likelihood (maximum-likelihood training) needs noise loguniform", "weighting", "noise")
        check_choice("class_cond", self.class_cond, ("auto", "on", "off"))
        check_choice("numeric", self.numeric, NUMERIC_MAPS)
        check(self.target is None or (isinstance(self.target, str) and self.target and self.class_cond != "off"),
              "target names a table column to condition on (class_cond auto or on)", "target", "class_cond")
        check((self.steps or 0) >= 0 and (self.minutes or 0) >= 0, "steps and minutes must not be negative",
              "steps", "minutes")
        check(bool(self.steps) or bool(self.minutes), "give a budget: steps N or minutes M", "steps", "minutes")
        check(self.minutes is None or math.isfinite(self.minutes), f"minutes must be finite, got {self.minutes}",
              "minutes")
        check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}", "batch_size")
        check(self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}", "grad_accum")
        for name, lo, hi in (("lr", 0, math.inf), ("p_std", 0, math.inf), ("min_snr_gamma", 0, math.inf)):
            v = getattr(self, name)
            check(lo < v < hi, f"{name} must be a finite number > 0, got {v}", name)
        for name in ("lr_decay_kimg", "weight_decay", "grad_clip", "ema_halflife_kimg", "ema_rampup"):
            v = getattr(self, name)
            check(0 <= v < math.inf, f"{name} must be a finite number >= 0, got {v}", name)
        check(self.lr_decay_frac is None or 0 <= self.lr_decay_frac <= 1,
              f"lr_decay_frac must be in [0, 1], got {self.lr_decay_frac}", "lr_decay_frac")
        check(0 <= self.label_dropout < 1, f"label_dropout must be in [0, 1), got {self.label_dropout}", "label_dropout")
        check(self.sigma_data is None or 0 < self.sigma_data < math.inf,
              f"sigma_data must be a finite number > 0, got {self.sigma_data}", "sigma_data")
        parse_size(self.image_size)
        check_choice("image_fit", self.image_fit, FITS)
        check_choice("augment", self.augment, AUGMENTS)
        check(0 <= self.augment_p <= 1, f"augment_p must be in [0, 1], got {self.augment_p}", "augment_p")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}", "warmup_steps")
        for name in ("log_every", "ckpt_every"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}", name)
        check(self.sample_every >= 0, f"sample_every must be >= 0, got {self.sample_every}", "sample_every")
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        check(self.channels is None or 1 <= self.channels <= 4096, f"channels must be in 1-4096, got {self.channels}",
              "channels")
        check(self.num_res_blocks is None or 1 <= self.num_res_blocks <= 16,
              f"num_res_blocks must be in 1-16, got {self.num_res_blocks}", "num_res_blocks")
        check(self.eval_every is None or self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}",
              "eval_every")
        check(self.holdout is None or 0 <= self.holdout < 1, f"holdout must be in [0, 1), got {self.holdout}",
              "holdout")
        check(not (self.holdout and self.eval_every == 0), "held-out rows are measured every eval_every steps: give "
              "eval_every >= 1 with holdout, or holdout 0", "eval_every", "holdout")
        check(not (self.holdout and self.eval_reference), "with holdout the run is evaluated on its held-out rows; "
              "eval_reference is for sampled evaluation (holdout 0)", "holdout", "eval_reference")
        check(self.eval_samples >= 4, f"eval_samples must be at least 4, got {self.eval_samples}", "eval_samples")

    def _read_saved_forms(self):
        """Runs of release 0.1.0 saved 0 / "" for "not given" and lists as text ("1,2,2", "none")."""
        for name in ("channels", "num_res_blocks", "sigma_data", "image_size", "steps", "minutes"):
            if getattr(self, name) == 0:
                setattr(self, name, None)
        for name in ("channel_mults", "attn_resolutions"):
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, None if v == "" else [] if v == "none" else int_list(name, v))
            elif v is not None:
                setattr(self, name, int_list(name, v))


def int_list(name, value) -> list:
    """Whole numbers, from a list or comma-separated text."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        return [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        raise DiffusekitError(f"{name} must be comma-separated whole numbers (e.g. 1,2,2), got {value!r}", name) from None


def net_overrides(cfg: TrainConfig, kind: str) -> dict:
    names = {"channels": "channels", "channel_mults": "channel_mults", "num_res_blocks": "num_res_blocks",
             "attn_resolutions": "attn_resolutions"} if kind == "image" else {"channels": "width", "num_res_blocks": "depth"}
    if kind != "image" and (cfg.channel_mults is not None or cfg.attn_resolutions is not None):
        raise DiffusekitError("channel_mults and attn_resolutions are U-Net settings; this data is vectors",
                              "channel_mults", "attn_resolutions")
    return {net: getattr(cfg, ours) for ours, net in names.items() if getattr(cfg, ours) is not None}


def check_new_run(cfg: TrainConfig, data):
    """Settings a new run must not ignore silently (runs saved before these checks may hold them, and still resume)."""
    if cfg.augment != "off" and data.codec.kind != "image":
        raise DiffusekitError(f"augment {cfg.augment} transforms images; {cfg.data} holds rows", "augment")
    if cfg.image_size and not os.path.isdir(cfg.data):
        raise DiffusekitError(f"image_size resizes a folder of images; {cfg.data} has its own size", "image_size")
    attn = net_overrides(cfg, data.codec.kind).get("attn_resolutions")
    if attn:  # a preset's own list covers several image sizes, so only a list given here is checked
        mults = cfg.channel_mults or UNET_PRESETS.get(cfg.preset, {}).get("channel_mults", ())
        have = [data.codec.shape[1] // 2 ** level for level in range(len(mults))]
        absent = [r for r in attn if r not in have]
        if absent and have:
            raise DiffusekitError(f"attn_resolutions {absent[0]} is not a resolution of this U-Net "
                                  f"({', '.join(map(str, have))})")


# tables: the held-out share, the fewest rows that get one, the evaluation interval, the fewest steps waited for an
# improvement
HOLDOUT, HOLDOUT_MIN_ROWS, HOLDOUT_MAX_ROWS, HOLDOUT_EVERY, HOLDOUT_PATIENCE = 0.1, 200, 2000, 250, 2000
LR_DECAY_FRAC = 0.3  # the recipe's last fraction of the budget over which the learning rate falls to 0
HELD_OUT_DRAWS = 20_000  # rows x noise draws the held-out loss averages over


def fill_recipe(cfg: TrainConfig, kind: str, device: torch.device, n: int = 0):
    """The settings left to the recipe (None), filled for this run of n samples: images trained from scratch get bf16
    autocast where the device computes bf16 natively and a learning rate that falls to 0 over the last 30% of the
    budget (with both, 20 minutes of training beat 60 of fp32 at a constant rate: docs/training.md). Vectors (tables,
    2-D points) trained from scratch get the same fall of their learning rate (a table's synthetic rows closer to the
    real ones, 2-D points' samples closer to the true density: docs/training.md), and a table read from a CSV file
    with at least HOLDOUT_MIN_ROWS rows keeps HOLDOUT of them (at most HOLDOUT_MAX_ROWS) out, to stop where its
    held-out loss is lowest. Everything else, where that was not measured, trains in fp32 at a constant rate. Filled
    once, when a run starts: its config.json holds the values."""
    scratch = cfg.objective == "diffusion" and not cfg.init_from
    recipe = kind == "image" and scratch
    vector = kind == "vector" and scratch
    table = vector and str(cfg.data).lower().endswith(".csv")
    if cfg.bf16 is None:
        cfg.bf16 = recipe and native_bf16(device)
    if cfg.lr_decay_frac is None:
        cfg.lr_decay_frac = LR_DECAY_FRAC if recipe or vector else 0.0
    if cfg.holdout is None:
        cfg.holdout = min(HOLDOUT, HOLDOUT_MAX_ROWS / n) if table and n >= HOLDOUT_MIN_ROWS else 0.0
    if cfg.eval_every is None:
        cfg.eval_every = HOLDOUT_EVERY if cfg.holdout else 0


def model_config_for(cfg: TrainConfig, data) -> ModelConfig:
    cond = cfg.class_cond == "on" or (cfg.class_cond == "auto" and data.labels is not None)
    if cond and data.labels is None:
        raise DiffusekitError(f"class_cond on, but {cfg.data} has no labels", "class_cond")
    mcfg = ModelConfig(kind=data.codec.kind, in_shape=list(data.codec.shape), preset=cfg.preset,
                       parameterization=cfg.parameterization,
                       sigma_data=cfg.sigma_data or (0.5 if data.codec.kind == "image" else 1.0),
                       num_classes=data.num_classes if cond else 0,
                       time_conditioning="vp" if cfg.noise == "vp" else "log", vp_schedule=cfg.vp_schedule,
                       dropout=cfg.dropout,
                       # written out in the run, so that a later change of the presets cannot change its network
                       overrides={**(scaled_preset(cfg.preset, data.codec.shape[1:]) if data.codec.kind == "image"
                                     and cfg.channel_mults is None and cfg.attn_resolutions is None else {}),
                                  # text: rotary positions (a run without the key was built with learned ones)
                                  **({"positions": "rotary"} if data.codec.kind == "text" else {}),
                                  **net_overrides(cfg, data.codec.kind)},
                       augment_dim=AUGMENT_DIM if cfg.augment == "edm" else 0,
                       **({"vocab": data.codec.tokens, "never": data.codec.never} if data.codec.kind == "text" else {}))
    if cfg.noise == "vp":
        mcfg.use_vp_range()
    return mcfg


# consistency distillation's settings over a source run's (`run.distill`), by ct_target. teacher (the default):
# lr 2e-4 without warm-up, the teacher's paths in TEACHER_STEPS calls; self: ECT's (Geng et al. 2024) noise levels
# ln t ~ N(-1.1, 2^2) without warm-up, lr 1e-3 and ct_q 4 instead of its 1e-4 and 256. Both measured best in minutes
# of tuning at a constant rate (docs/sampling.md)
DISTILL_SETTINGS = {
    "teacher": {"objective": "consistency", "ct_target": "teacher", "lr": 2e-4, "warmup_steps": 0, "lr_decay_frac": 0.0},
    "self": {"objective": "consistency", "ct_target": "self", "lr": 1e-3, "warmup_steps": 0, "p_mean": -1.1,
             "p_std": 2.0, "lr_decay_frac": 0.0},
}
CT_TARGETS = tuple(DISTILL_SETTINGS)
TEACHER_STEPS = 8  # the teacher's ODE solve per path: its default sampling at 8 calls (samplers.ode_path)

# the source run's settings a fine-tuned run takes over: its network and its preconditioning
INHERITED = ("preset", "channels", "channel_mults", "num_res_blocks", "attn_resolutions", "parameterization",
             "sigma_data", "noise", "vp_schedule")


def read_source(cfg: TrainConfig) -> dict:
    """The run to fine-tune from: its config's network settings copied into cfg (said when they differ from the
    ones given), and its EMA weights, step and class names."""
    src = Path(cfg.init_from)
    saved = read_run_config(src)
    check((src / "last").is_dir(), f"init_from {src} has no checkpoint (last)", "init_from")
    for name in INHERITED:
        if name in saved.get("train", {}):
            setattr(cfg, name, saved["train"][name])
    cfg._read_saved_forms()
    tensors, meta = load_checkpoint(src / "last", ("ema",))
    return {"ema": tensors["ema"], "step": int(meta["step"]), "class_names": saved.get("class_names", []),
            "codec": saved["codec"], "path": src}


def init_weights(net, source: dict, class_names: list):
    """net's weights from the source run's EMA: each class the source knows by name keeps its label embedding, the
    null label keeps the source's, new classes keep their fresh rows."""
    state, own, key = dict(source["ema"]), net.state_dict(), "embed.class_emb.weight"
    if key in own:
        rows = own[key].clone()
        if key in state:
            old, names = state[key], source["class_names"]
            for i, name in enumerate(class_names):
                if name in names:
                    rows[i] = old[names.index(name)]
            rows[-1] = old[-1]
        state[key] = rows
    else:
        state.pop(key, None)
    for k in own:  # an augmentation map the source lacks starts at zero (its un-augmented behaviour)
        if k.startswith("embed.augment_emb") and k not in state:
            state[k] = own[k]
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise DiffusekitError(f"the network of {source['path']} does not fit this data ({str(e).splitlines()[0]}); "
                              f"fine-tuning needs data of the same kind, channels (or columns) and a size the "
                              f"network takes", "init_from") from None


LOG_COLUMNS = ["step", "nimg", "seconds", "loss", "grad_norm", "lr", "img_per_s"]


def open_board(path: Path):
    """A TensorBoard event writer in path (rank 0's)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DiffusekitError("tensorboard logging needs tensorboard: pip install 'diffusekit[tensorboard]'",
                              "tensorboard") from None
    return SummaryWriter(str(path))


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.device = pick_device(cfg.device)
        self.rank, self.world = init_distributed(self.device)
        check(cfg.batch_size >= self.world * cfg.grad_accum,
              f"batch_size {cfg.batch_size} is smaller than processes x accumulation steps "
              f"({self.world * cfg.grad_accum})", "batch_size")
        self.out = Path(cfg.out)
        self.data = load_data(cfg.data, cfg.image_size or None, categorical=[cfg.target] if cfg.target else (),
                              image_fit=cfg.image_fit, lazy=True,  # batches are drawn by index: a big folder is read per batch
                              numeric=cfg.numeric)
        if cfg.target:
            self.data = with_target(self.data, cfg.target)
        if len(self.data) == 0:
            raise DiffusekitError(f"{cfg.data} holds no samples")
        source = None
        if not resume:
            check_new_run(cfg, self.data)
            source = read_source(cfg) if cfg.init_from else None
            check(source is None or source["codec"]["kind"] == self.data.codec.kind, f"init_from {cfg.init_from} "
                  f"models {source and source['codec']['kind']}s; this data holds {self.data.codec.kind}s", "init_from")
            # its weights work in its model space: numeric columns mapped one way cannot be read the other way
            source_map = source and ("quantile" if source["codec"].get("quantiles") else "standard")
            check(source is None or (source_map == "quantile") == bool(getattr(self.data.codec, "quantiles", None)),
                  f"init_from {cfg.init_from} was trained with the other numeric map; give numeric {source_map}",
                  "init_from", "numeric")
        self.mcfg = model_config_for(cfg, self.data)
        fill_recipe(cfg, self.mcfg.kind, self.device, len(self.data))
        exists = (self.out / "config.json").exists()
        if self.world > 1:  # every rank must decide before rank 0 writes config.json
            dist.barrier()
        if not resume and exists:
            raise DiffusekitError(f"{self.out} already holds a run; resume it or choose another out", "resume", "out")
        torch.manual_seed(cfg.seed)
        self.denoiser = build_denoiser(self.mcfg).to(self.device)
        self.net = self.denoiser.net
        if source is not None:
            init_weights(self.net, source, self.data.class_names)
        check(not cfg.checkpointing or hasattr(self.net, "checkpointing"), "checkpointing is for the U-Net of images; "
              "a table's network is small", "checkpointing")
        self.net.checkpointing = cfg.checkpointing
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        # the tensors themselves stay put (loading copies into them): listed once, not walked every step
        self.params, self.ema_params = list(self.net.parameters()), list(self.ema.parameters())
        # foreach: the same arithmetic as the default per-tensor loop, without its Python overhead on CPU
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay,
                                     foreach=True)
        weighting = cfg.weighting if cfg.weighting != "auto" else {"x0": "edm"}.get(cfg.parameterization, cfg.parameterization)
        noise = noise_distribution(cfg.noise, cfg.p_mean, cfg.p_std, cfg.vp_schedule, self.mcfg.sigma_min,
                                   self.mcfg.sigma_max)
        if self.mcfg.kind == "text":  # tokens: masked diffusion's bound, drawn and called as the others are
            self.loss = MaskedDiffusionLoss()
        elif cfg.ct_target == "teacher":
            self.loss = TeacherPathLoss(noise, self.teacher_path(source), TEACHER_STEPS)
        elif cfg.objective == "consistency":
            self.loss = ConsistencyLoss(noise, cfg.ct_q)
        else:
            self.loss = DiffusionLoss(noise, weighting, self.mcfg.sigma_data, cfg.min_snr_gamma)
        self.held_out = self._hold_out()
        self.sampling = SampleConfig.from_options(**sampling_defaults(cfg.objective, self.mcfg.kind))
        self.step, self.elapsed, self._perm, self.spent = 0, 0.0, (None, None), 0.0
        self.evaluator, self.best, self.best_step = None, float("inf"), None
        self.board = open_board(self.out / "tensorboard") if cfg.tensorboard and self.rank == 0 else None
        if cfg.eval_every and self.rank == 0 and self.held_out is None:
            self.evaluator = Evaluator(cfg.eval_reference or cfg.data, cache_dir=self.out / "evaluator", n_boot=5)
        if self.rank == 0 and self.out.is_dir():
            remove_dead_writers(self.out)
        if resume:
            self._load()
        elif self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self.save()  # a step-0 checkpoint, so a run stopped before its first checkpoint can still --resume
            # config.json last: a folder holds a run once it is there, and then always with a checkpoint to resume
            write_json_atomic(self.out / "config.json", {
                "train": cfg.to_dict(), "model": self.mcfg.to_dict(), "codec": self.data.codec.to_dict(),
                "class_names": self.data.class_names, "format": 1,
                **({"init_from": {"path": str(Path(cfg.init_from).resolve()), "step": source["step"]}} if source else {})})

    # ----- state -------------------------------------------------------------------------------------------

    def _load(self):
        saved = read_run_config(self.out)
        if saved["model"] != self.mcfg.to_dict() or saved["codec"] != self.data.codec.to_dict() \
                or saved.get("class_names", []) != self.data.class_names:
            raise DiffusekitError(f"{self.out}: the data or settings differ from the run's saved config; cannot resume")
        tensors, meta = load_checkpoint(self.out / "last", ("model", "ema", "optimizer"))
        try:
            self.net.load_state_dict(tensors["model"])
            self.ema.load_state_dict(tensors["ema"])
            optimizer_from_tensors(self.opt, tensors["optimizer"], meta["param_groups"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise DiffusekitError(f"checkpoint {self.out / 'last'} does not match the run: {str(e).splitlines()[0]}") from None
        self.step, self.elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
        self.best, self.best_step = float(meta.get("best_score", float("inf"))), meta.get("best_step")
        if self.rank == 0:
            for name in ("log.csv", "eval.csv"):
                _truncate_log(self.out / name, self.step)

    def save(self, name: str = "last", extra: dict | None = None):
        if self.rank != 0:
            return
        opt_tensors, groups = optimizer_to_tensors(self.opt)
        save_checkpoint(self.out / name, {"model": self.net.state_dict(), "ema": self.ema.state_dict(),
                                          "optimizer": opt_tensors},
                        {"step": self.step, "nimg": self.step * self.cfg.batch_size, "elapsed": self.elapsed,
                         "param_groups": groups, "best_score": self.best, "best_step": self.best_step,
                         **(extra or {})})

    def teacher_path(self, source: dict | None):
        """path(eps, labels) of TeacherPathLoss: the source run's EMA denoiser solving its ODE in TEACHER_STEPS
        (source None: resuming, read again from init_from)."""
        if source is None:
            try:
                source = read_source(self.cfg)
            except DiffusekitError as e:
                raise DiffusekitError(f"{self.out} learns from its teacher {self.cfg.init_from}, which resuming "
                                      f"needs: {e}", "init_from") from None
        teacher = build_denoiser(self.mcfg).to(self.device)
        init_weights(teacher.net, source, self.data.class_names)
        teacher.eval().requires_grad_(False)
        return lambda eps, labels: ode_path(teacher, self.mcfg, eps, TEACHER_STEPS, labels)

    def ema_denoiser(self):
        return self.denoiser.with_net(self.ema.eval())

    def _hold_out(self):
        """The rows kept out of training (cfg.holdout of them, seeded; None without), taken out of self.data: the
        model-space rows, their labels, and the noise levels and draws their loss is measured at, the same at every
        evaluation."""
        if not self.cfg.holdout:
            return None
        check(self.mcfg.kind == "vector" and isinstance(self.loss, DiffusionLoss), "holdout keeps rows of a table "
              f"out of diffusion training; this run trains {self.mcfg.kind}s with objective {self.cfg.objective}",
              "holdout")
        n = len(self.data)
        k = int(round(self.cfg.holdout * n))
        check(1 <= k < n, f"holdout {self.cfg.holdout:g} of {n} rows keeps {k} out: give a share that leaves rows "
              f"on both sides", "holdout")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + 17))
        held, kept = order[:k], order[k:].sort().values
        labels = self.data.labels
        x, y = self.data.x[held], None if labels is None else labels[held]
        self.data = Data(self.data.x[kept], None if labels is None else labels[kept], self.data.codec,
                         self.data.class_names)
        draws = max(4, -(-HELD_OUT_DRAWS // k))  # enough noise draws that the loss moves with the model, not the draws
        x = x.repeat(draws, 1)
        sigma, eps = self.loss.draw(x.shape, torch.Generator().manual_seed(self.cfg.seed + 99))
        return x, None if y is None else y.repeat(draws), sigma, eps

    def held_out_loss(self) -> float:
        """The EMA model's denoising loss on the held-out rows (every rank computes it; rank 0's value is used)."""
        x, y, sigma, eps = self.held_out
        den = self.ema_denoiser()
        with torch.no_grad():
            loss = torch.cat([self.loss(den, x[i:i + 4096].to(self.device), None if y is None else
                                        y[i:i + 4096].to(self.device), sigma[i:i + 4096], eps[i:i + 4096]).float().cpu()
                              for i in range(0, len(x), 4096)]).mean()
        if self.world > 1:
            dist.broadcast(loss, 0)
        return float(loss)

    def evaluate(self):
        """Evaluate the EMA weights (the held-out rows' loss, or samples' figures), log the figures to eval.csv, and
        keep the best checkpoint in best/."""
        if self.held_out is not None:  # on every rank: the stop depends on it
            score = self.held_out_loss()
            header, row = ["step", "held_out_loss"], [self.step, round(score, 6)]
        elif self.rank != 0:
            return
        else:
            n = self.cfg.eval_samples
            labels = self.mcfg.pick_labels(n, seed=1)
            x = sample(self.ema_denoiser(), self.mcfg, n, replace(self.sampling, seed=1), labels=labels,
                       device=self.device)
            result = self.evaluator(self.data.codec.decode(x))
            score = self.evaluator.headline(result)
            keys = [k for k in ("fcd", "fcd_se", "kid", "precision", "recall", "energy_distance", "energy_distance_se")
                    if k in result]
            header, row = ["step", "n_samples", *keys], [self.step, n, *[round(result[k], 6) for k in keys]]
        if self.rank == 0:
            self.log_row(self.out / "eval.csv", header, row)
        if score < self.best:
            self.best, self.best_step = score, self.step
            self.save("best", {"score": score})  # rank 0 writes
        return score

    # ----- one step ----------------------------------------------------------------------------------------

    def batch_indices(self, step: int) -> torch.Tensor:
        """Global batch of `step`: consecutive slices of per-epoch permutations (seeded by seed and epoch)."""
        N, B = len(self.data), self.cfg.batch_size
        out, pos, end = [], step * B, (step + 1) * B
        while pos < end:
            epoch, off = divmod(pos, N)
            if self._perm[0] != epoch:
                g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch + 1)
                self._perm = (epoch, torch.randperm(N, generator=g))
            take = min(end - pos, N - off)
            out.append(self._perm[1][off: off + take])
            pos += take
        return torch.cat(out)

    def train_step(self):
        cfg, B = self.cfg, self.cfg.batch_size
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        idx = self.batch_indices(self.step)
        sigma, eps = self.loss.draw((B, *self.mcfg.in_shape), g)
        theta, aug = draw_augment(B, cfg.augment, cfg.augment_p, g)
        labels = None
        if self.mcfg.num_classes:
            labels = self.data.labels[idx].clone()
            labels[torch.rand(B, generator=g) < cfg.label_dropout] = self.mcfg.num_classes  # null label for CFG
        chunks = torch.tensor_split(torch.arange(B), self.world * cfg.grad_accum)  # never empty: B >= world * accum
        mine = chunks[self.rank * cfg.grad_accum: (self.rank + 1) * cfg.grad_accum]
        self.opt.zero_grad(set_to_none=False)
        total = torch.zeros((), device=self.device)
        self.net.train()
        for j, sl in enumerate(mine):
            seed_device(self.device, cfg.seed * 1_000_003 + self.step * 65_537 + self.rank * 257 + j)  # dropout
            x0 = self.data.x[idx[sl]].to(self.device)
            if theta is not None:
                x0 = apply_augment(x0, theta[sl])
            lab = None if labels is None else labels[sl].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                per_sample = self.loss(self.denoiser, x0, lab, sigma[sl], eps[sl],
                                       augment_labels=None if aug is None else aug[sl].to(self.device))
            part = per_sample.float().sum() / B
            part.backward()
            total += part.detach()
        if self.world > 1:  # one all-reduce of the flattened gradients (sum over ranks = the global mean)
            flat = torch.cat([p.grad.reshape(-1) for p in self.params] + [total.reshape(1)])
            dist.all_reduce(flat)
            total = flat[-1].clone()
            offset = 0
            for p in self.params:
                p.grad.copy_(flat[offset: offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        loss, grad_norm = float(total), float(grad_norm)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return loss, grad_norm
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate(self.step, self.spent)
        self.opt.step()
        self._update_ema()
        return loss, grad_norm

    def learning_rate(self, step: int, spent: float = 0.0) -> float:
        """Linear warm-up, then constant or (lr_decay_kimg > 0) decaying as 1 / sqrt(images seen) (EDM2), times a
        linear fall to 0 over the last lr_decay_frac of the budget. spent is the fraction of the budget spent
        (a function of the step under a step budget, so a resumed run follows the same schedule)."""
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        if cfg.lr_decay_kimg > 0:
            lr /= math.sqrt(max((step + 1) * cfg.batch_size / (cfg.lr_decay_kimg * 1000), 1.0))
        if cfg.lr_decay_frac > 0:
            lr *= min(1.0, (1.0 - spent) / cfg.lr_decay_frac)
        return lr

    @torch.no_grad()
    def _update_ema(self):
        # EDM's EMA: half-life in images, ramped up with the number of images seen.
        cfg, B = self.cfg, self.cfg.batch_size
        halflife = cfg.ema_halflife_kimg * 1000
        if cfg.ema_rampup > 0:
            halflife = min(halflife, (self.step + 1) * B * cfg.ema_rampup)
        beta = 0.5 ** (B / max(halflife, 1e-8))
        # p.lerp(p_ema, beta) for all tensors in one call (a per-tensor loop dominated small models' steps)
        torch._foreach_copy_(self.ema_params, torch._foreach_lerp(self.params, self.ema_params, beta))
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    # ----- the loop ----------------------------------------------------------------------------------------

    def _should_stop(self, t_start):
        """Whether the budget is spent; sets self.spent, the fraction of it spent (the larger of steps and
        minutes where both are given)."""
        cfg = self.cfg
        spent = max(self.step / cfg.steps if cfg.steps else 0.0,
                    (time.time() - t_start) / (cfg.minutes * 60) if cfg.minutes else 0.0)
        if self.world > 1:  # rank 0's clock decides, so every rank stops at the same step with the same lr
            flag = torch.tensor([spent], dtype=torch.float64, device=self.device)
            dist.broadcast(flag, 0)
            spent = float(flag.item())
        self.spent = min(spent, 1.0)
        return spent >= 1.0 or self.stalled()

    def stalled(self) -> bool:
        """Held-out rows: their loss has not improved for as many steps as it took to reach its best (at least
        HOLDOUT_PATIENCE): the model is learning its training rows by heart."""
        return self.held_out is not None and self.best_step is not None and \
            self.step - self.best_step >= max(HOLDOUT_PATIENCE, self.best_step)

    def write_samples(self, path: Path):
        if self.rank != 0:
            return
        n = 64 if self.mcfg.kind == "image" else 1000
        ema_denoiser = self.ema_denoiser()
        labels = torch.arange(n) % self.mcfg.num_classes if self.mcfg.num_classes else None
        x = sample(ema_denoiser, self.mcfg, n, self.sampling, labels=labels, device=self.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        nrow = self.mcfg.num_classes if self.mcfg.num_classes and n % self.mcfg.num_classes == 0 else None
        if self.mcfg.kind == "text":  # samples as lines of text
            write_text_atomic(path.with_suffix(".txt"), "\n".join(self.data.codec.decode(x)) + "\n")
            return
        image = picture(self.data.codec.decode(x), self.mcfg.kind, nrow=nrow)
        image.save(path)
        if self.board is not None:
            self.board.add_image("samples", np.asarray(image.convert("RGB")), self.step, dataformats="HWC")
            self.board.flush()

    def log_row(self, path: Path, header: list, row: list):
        """One row of a CSV log (the source of truth; its header first in a new file), mirrored to TensorBoard as
        scalars named file/column at the row's step."""
        new = not path.exists()
        with open(path, "a", newline="") as f:
            if new:
                csv.writer(f).writerow(header)
            csv.writer(f).writerow(row)
        if self.board is not None:
            for name, value in zip(header[1:], row[1:]):
                self.board.add_scalar(f"{path.stem}/{name}", float(value), row[0])

    def run(self):
        cfg = self.cfg
        t_start, t_prev, step_prev, elapsed0 = time.time(), time.time(), self.step, self.elapsed
        log_path = self.out / "log.csv"
        if self.rank == 0 and not log_path.exists():  # a header even before the first row
            with open(log_path, "w", newline="") as f:
                csv.writer(f).writerow(LOG_COLUMNS)
        total = cfg.steps if cfg.steps else int(cfg.minutes * 60)
        bar = tqdm(total=total, initial=self.step if cfg.steps else 0, disable=not self.progress or self.rank != 0,
                   unit="step" if cfg.steps else "s", desc="training", dynamic_ncols=True,
                   bar_format=None if cfg.steps else "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s [{elapsed}<{remaining}{postfix}]")
        losses = []

        def save_now():  # a checkpoint with the wall-clock time trained so far, over all invocations
            self.elapsed = elapsed0 + time.time() - t_start
            self.save()

        try:
            while not self._should_stop(t_start):
                loss, grad_norm = self.train_step()
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    self.save()  # parameters are still those of the last good step
                    raise DiffusekitError(f"loss became {loss} (gradient norm {grad_norm}) at step {self.step}; "
                                          f"stopped; the last good state is saved in {self.out / 'last'}")
                self.step += 1
                losses.append(loss)
                now = time.time()
                if cfg.steps:
                    bar.update(1)
                else:
                    bar.update(min(int(now - t_start), total) - bar.n)
                if self.step % cfg.log_every == 0:
                    rate = (self.step - step_prev) * cfg.batch_size / max(now - t_prev, 1e-9)
                    bar.set_postfix(step=self.step, loss=f"{sum(losses) / len(losses):.4f}", img_s=f"{rate:.0f}")
                    if self.rank == 0:
                        self.log_row(log_path, LOG_COLUMNS, [
                            self.step, self.step * cfg.batch_size, round(elapsed0 + now - t_start, 2),
                            sum(losses) / len(losses), grad_norm, self.opt.param_groups[0]["lr"], round(rate, 2)])
                    losses, t_prev, step_prev = [], now, self.step
                if self.step % cfg.ckpt_every == 0:
                    save_now()
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    score = self.evaluate()
                    if score is not None:
                        bar.set_postfix(step=self.step, eval=f"{score:.4g}", best=f"{self.best:.4g}")
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.write_samples(self.out / "samples" / f"step_{self.step:07d}.png")
        except KeyboardInterrupt:
            save_now()  # keep everything trained so far; --resume continues from here
            raise
        finally:
            bar.close()
            if self.board is not None:
                self.board.flush()
        if cfg.eval_every and self.step % cfg.eval_every:
            self.evaluate()  # the final state is a candidate for best/ too
        save_now()
        self.write_samples(self.out / "samples" / f"step_{self.step:07d}.png")
        if self.board is not None:
            self.board.close()
        return self.out


def _truncate_log(path: Path, step: int):
    """Drop rows logged after `step` (a crashed run logs past its last checkpoint; resume repeats those steps)."""
    if not path.exists():
        return
    rows = path.read_text().splitlines()
    keep = rows[:1] + [r for r in rows[1:] if r and int(r.split(",")[0]) <= step]
    if len(keep) != len(rows):
        write_text_atomic(path, "\n".join(keep) + "\n")
