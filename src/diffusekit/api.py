"""The few-lines Python API: load a run, sample from it, write what the CLI writes.

    run = diffusekit.load_run("runs/fm")
    x = diffusekit.sample(run.denoiser, run.model_config, 16, steps=20, seed=0)
    images = run.codec.decode(x)            # uint8 NHWC
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import DiffusekitError
from .precond import guided
from .samplers import DEFAULT_SAMPLER, check_knobs, generate, get_sampler
from .schedules import sampling_sigmas, vp_table


def sigma_grid(model_config, steps: int, grid: str = "karras", rho=None, sigma_min=None, sigma_max=None):
    """The sampling grid for a model: `steps` sigmas within its training range (or [sigma_min, sigma_max] where
    given, which must lie inside it), plus 0. rho: the Karras spacing (7 when not given)."""
    if rho is not None and grid != "karras":
        raise DiffusekitError(f"rho is the spacing of the karras grid; the {grid} grid takes none")
    if (sigma_min is not None or sigma_max is not None) and grid == "vp":
        raise DiffusekitError("the vp grid is the model's own timestep range; it takes no sigma_min / sigma_max")
    rho = 7.0 if rho is None else rho
    lo = model_config.sigma_min if sigma_min is None else sigma_min
    hi = model_config.sigma_max if sigma_max is None else sigma_max
    tol = 1e-6 * model_config.sigma_min  # the range as printed below may be rounded
    if not (model_config.sigma_min - tol <= lo < hi <= model_config.sigma_max * (1 + 1e-6)):
        raise DiffusekitError(f"need {model_config.sigma_min:.6g} <= sigma_min < sigma_max <= "
                              f"{model_config.sigma_max:.6g} (the model's training range), got sigma_min {lo:g}, "
                              f"sigma_max {hi:g}")
    if not (rho > 0 and math.isfinite(rho)):
        raise DiffusekitError(f"rho must be a finite number > 0, got {rho}")
    ab = vp_table(model_config.vp_schedule) if model_config.time_conditioning == "vp" else None
    return sampling_sigmas(grid, steps, max(lo, model_config.sigma_min), min(hi, model_config.sigma_max),
                           alpha_bars=ab, rho=rho)


def sample_seeds(seed: int, n: int, start: int = 0, stream: int = 0):
    """Per-sample seeds: sample i of seed s is the same whatever the batch size or n. Mixed by SeedSequence
    because torch's CPU generator keeps only 32 bits of a seed (so seed << 32 + i would collide). A nonzero
    `stream` gives draws independent of sampling's (likelihood probes must not reuse a sample's own noise)."""
    key = (lambda i: [seed, i]) if stream == 0 else (lambda i: [seed, i, stream])
    return [int(np.random.SeedSequence(key(i)).generate_state(1)[0]) for i in range(start, start + n)]


def pick_labels(model_config, n: int, seed: int, class_label=None):
    """Labels for a conditional model: the chosen class, or uniform random classes (seeded)."""
    if seed < 0:
        raise DiffusekitError(f"seed must be >= 0, got {seed}")
    if model_config.num_classes == 0:
        if class_label is not None:
            raise DiffusekitError("this model is unconditional: --class needs a run trained with class labels")
        return None
    if class_label is not None:
        if not 0 <= class_label < model_config.num_classes:
            raise DiffusekitError(f"class {class_label} does not exist; this model has classes 0..{model_config.num_classes - 1}")
        return torch.full((n,), class_label, dtype=torch.long)
    return torch.randint(0, model_config.num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def sample(denoiser, model_config, n: int, *, sampler=DEFAULT_SAMPLER, steps=20, grid="karras", temperature=1.0,
           seed=0, labels=None, guidance=1.0, batch_size=256, device="cpu", callback=None, progress=False,
           rho=None, sigma_min=None, sigma_max=None, **knobs):
    """n samples in model space (decode with the run's codec). labels: LongTensor [n] for a conditional model.
    The grid spans the model's training range unless sigma_min / sigma_max narrow it (karras: spacing rho)."""
    if n < 1:
        raise DiffusekitError(f"number of samples must be at least 1, got {n}")
    if batch_size < 1:
        raise DiffusekitError(f"batch size must be at least 1, got {batch_size}")
    if seed < 0:
        raise DiffusekitError(f"seed must be >= 0, got {seed}")
    if guidance < 0 or not math.isfinite(guidance):
        raise DiffusekitError(f"guidance must be a finite number >= 0, got {guidance}")
    if guidance != 1.0 and model_config.num_classes == 0:
        raise DiffusekitError("--guidance needs a class-conditional model")
    check_knobs(sampler, knobs)
    fn = get_sampler(sampler)
    sigmas = sigma_grid(model_config, steps, grid, rho, sigma_min, sigma_max)
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), disable=not progress, desc="sampling", unit="batch"):
            b = min(batch_size, n - start)
            D = denoiser
            if labels is not None:
                D = guided(denoiser, labels[start:start + b].to(device), guidance, model_config.num_classes)
            x = generate(D, fn, (b, *model_config.in_shape), sigmas, seeds=sample_seeds(seed, b, start),
                         temperature=temperature, callback=callback, device=device, **knobs)
            out.append(x.float().cpu())
    return torch.cat(out)


def save_samples(path: str, decoded: np.ndarray, labels=None, kind="image", columns=None):
    """`.npz` (arr_0, and arr_1 labels) or a folder of PNGs (images) / a CSV (vectors)."""
    from PIL import Image

    from .checkpoint import save_npz_atomic

    if path.endswith(".npz"):
        if decoded.dtype == object:
            raise DiffusekitError(f"{path}: a table with categorical columns is written as .csv, not .npz")
        arrays = {"arr_0": decoded}
        if labels is not None:
            arrays["arr_1"] = np.asarray(labels)
        save_npz_atomic(path, **arrays)
    elif kind == "image":
        os.makedirs(path, exist_ok=True)
        for i, im in enumerate(decoded):
            name = f"{i:06d}" + (f"_class{int(labels[i])}" if labels is not None else "") + ".png"
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(os.path.join(path, name))
    elif path.endswith(".csv"):
        from .checkpoint import write_csv_atomic

        write_csv_atomic(path, columns, decoded, exact=True)
    else:
        raise DiffusekitError(f"--out for vectors must end in .npz or .csv, got {path!r}")
