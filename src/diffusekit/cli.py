"""The `diffusekit` command: a thin layer over the library (anything here is a few lines of Python)."""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import api
from .checkpoint import (load_checkpoint, load_run, save_image_atomic, save_npz_atomic, write_csv_atomic,
                         write_text_atomic)
from .errors import DiffusekitError
from .likelihood import unconditional
from .samplers import DEFAULT_SAMPLER, SAMPLERS
from .schedules import GRIDS
from .train import TrainConfig, Trainer, pick_device, resume_config
from .viz import image_grid, picture


def _add_config_options(p: argparse.ArgumentParser, cls, skip=()):
    """One --option per dataclass field (types from the defaults), so the CLI and the config never drift."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", default=None)
        else:
            p.add_argument(flag, type=type(default) if default is not None else str, default=None,
                           required=default is None and f.name not in ("data", "out"))


# ---------------------------------------------------------------------------------------------------------


def cmd_train(a):
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if getattr(a, f.name) is not None}
    if a.resume:
        if not a.out:
            raise DiffusekitError("--resume needs --out RUN_DIR")
        extra = sorted(set(given) - {"out", "steps", "minutes"})
        if extra:
            raise DiffusekitError(f"--resume continues the saved config; only --steps/--minutes may change (got --{extra[0].replace('_', '-')})")
        cfg = resume_config(a.out, steps=given.get("steps"), minutes=given.get("minutes"))
    else:
        if not a.data or not a.out:
            raise DiffusekitError("train needs --data SPEC and --out RUN_DIR")
        cfg = TrainConfig.from_dict(given)
    out = Trainer(cfg, resume=a.resume, progress=not a.no_progress).run()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run saved in {out} (checkpoint {out / 'last'}, log {out / 'log.csv'}, samples {out / 'samples'})")


def cmd_sample(a):
    if a.n < 1:
        raise DiffusekitError(f"--n must be at least 1, got {a.n}")
    if not a.out and not a.grid:
        raise DiffusekitError("nothing to write: give --out FILE.npz|DIR and/or --grid FILE.png")
    if a.grid and not a.grid.lower().endswith(".png"):
        raise DiffusekitError(f"--grid must be a .png file, got {a.grid!r}")
    device = pick_device(a.device)
    run = load_run(a.run, a.checkpoint, ema=not a.no_ema, device=device)
    _check_outputs([("--out", a.out, a.out and _samples_out(a.out, run.codec.kind)), ("--grid", a.grid, "file")],
                   runs=[a.run])
    knobs = sampler_knobs(a)
    labels = api.pick_labels(run.model_config, a.n, a.seed, a.class_label)
    x = api.sample(run.denoiser, run.model_config, a.n, sampler=a.sampler, steps=a.steps, grid=a.schedule,
                   temperature=a.temperature, seed=a.seed, labels=labels, guidance=a.guidance,
                   batch_size=a.batch_size, device=device, progress=not a.no_progress,
                   rho=a.rho, sigma_min=a.sigma_min, sigma_max=a.sigma_max, **knobs)
    _check_finite(x, "samples")
    decoded = run.codec.decode(x)
    if a.out:
        api.save_samples(a.out, decoded, None if labels is None else labels.numpy(), run.codec.kind,
                         columns=getattr(run.codec, "columns", None))
        print(f"wrote {a.n} samples to {a.out}")
    if a.grid:
        save_image_atomic(picture(decoded[:256] if run.codec.kind == "image" else decoded, run.codec.kind), a.grid)
        print(f"wrote grid {a.grid}")
    if a.report:
        _report_nll(run, x, labels, a, device)


def _report_nll(run, x, labels, a, device):
    """`sample --report`: the exact NLL of the generated samples (as written: 8-bit images are re-quantized);
    for a conditional run, -ln p(x | its label) without guidance."""
    from .likelihood import nll, summarize

    x = run.codec.encode(run.codec.decode(x))
    r = nll(run.denoiser, run.model_config, run.codec, x, seed=a.seed, labels=labels, batch_size=a.batch_size,
            device=device, progress=not a.no_progress)
    unit = "bits/dim (8-bit, dequantized)" if run.codec.kind == "image" else "bits/dim"
    (m, se), (mn, sen) = summarize(r["bits_per_dim"]), summarize(r["nats"])
    given = " given their labels" if labels is not None else ""
    print(f"NLL of the {len(x)} samples at temperature {a.temperature:g}{given}: {m:.4f} +- {se:.4f} {unit}; "
          f"{mn:.2f} +- {sen:.2f} nats/sample (exact, probability-flow ODE)")


def _run_data(run, spec: str, n: int):
    """A data spec in the run's model space (encoded by the run's own codec), its first n samples (0: all)."""
    from .data import check_columns, load_data

    if n < 0:
        raise DiffusekitError(f"--n must be >= 0 (0: all), got {n}")
    data = load_data(spec, image_size=run.model_config.in_shape[-1] if run.codec.kind == "image" else None,
                     categorical=getattr(run.codec, "categories", {}))  # new rows typed as the run's columns
    if data.codec.kind != run.codec.kind:
        raise DiffusekitError(f"{spec} holds {data.codec.kind}s but the run models {run.codec.kind}s")
    x, labels = (data.x[:n], None if data.labels is None else data.labels[:n]) if n else (data.x, data.labels)
    if run.codec.kind == "vector":  # the run's codec checks the columns' values (categories included)
        if len(data.codec.columns) != len(run.codec.columns):
            raise DiffusekitError(f"{spec} has rows of {len(data.codec.columns)} columns; this run models "
                                  f"{len(run.codec.columns)} ({', '.join(run.codec.columns)})")
        check_columns(data.codec.columns, run.codec.columns, "the run was trained on")
        return run.codec.encode(data.codec.decode(x)), labels
    want = tuple(run.model_config.in_shape)
    if tuple(x.shape[1:]) != want:
        raise DiffusekitError(f"{spec} has samples of shape {tuple(x.shape[1:])}; this run models "
                              f"{' x '.join(map(str, want))}")
    return run.codec.encode(data.codec.decode(x)), labels


def _init_distributed(device):
    from .train import _distributed

    return _distributed(device)[0]


def cmd_nll(a):
    from .likelihood import nll, summarize

    device = pick_device(a.device)
    if a.method == "elbo":
        _unused(a, ("--estimator", "--probes", "--rtol", "--atol"), "is an option of the exact likelihood (--method ode "
                "or both)")
    if a.method == "ode":
        _unused(a, ("--levels",), "is an option of the ELBO (--method elbo or both)")
    rank = _init_distributed(device)
    run = load_run(a.run, a.checkpoint, ema=not a.no_ema, device=device)
    if rank == 0:
        _check_outputs([("--csv", a.csv, "file")], inputs=[a.data], runs=[a.run])
    x, labels = _run_data(run, a.data, a.n)
    if a.class_labels:
        if labels is None:
            raise DiffusekitError(f"--class-labels: {a.data} has no labels")
        k = run.model_config.num_classes
        if k == 0:
            raise DiffusekitError("--class-labels: this run is unconditional")
        if int(labels.max()) >= k or int(labels.min()) < 0:
            raise DiffusekitError(f"--class-labels: {a.data} has labels outside the run's {k} classes")
    d = x[0].numel()
    report = {"run": str(a.run), "data": a.data, "n": len(x), "dims": d,
              "units": "8-bit images, uniformly dequantized (discrete-data bound)" if run.codec.kind == "image"
              else "data units (the codec's standardization undone)"}
    per_sample = {}
    for method in (("ode", "elbo") if a.method == "both" else (a.method,)):
        t0 = time.time()
        r = nll(run.denoiser, run.model_config, run.codec, x, method=method, seed=a.seed, batch_size=a.batch_size,
                labels=labels if a.class_labels else None, estimator=a.estimator, n_probes=a.probes, rtol=a.rtol,
                atol=a.atol, n_levels=a.levels, device=device, progress=not a.no_progress and not a.json)
        _check_finite(r["nats"], "likelihoods")
        (m, se), (b, bse) = summarize(r["nats"]), summarize(r["bits_per_dim"])
        name = "exact" if method == "ode" else "elbo"
        if len(x) < 2:  # no standard error from one sample (JSON null, not NaN)
            se = bse = None
        report[name] = {"nll_nats": m, "nll_nats_se": se, "bits_per_dim": b, "bits_per_dim_se": bse,
                        "nfe_per_sample": float(r["nfe"].mean()), "seconds": round(time.time() - t0, 2)}
        per_sample[name] = r["nats"]
    if rank != 0:
        return
    if a.csv:
        rows = ["index," + ",".join(f"{k}_nats,{k}_bits_per_dim" for k in per_sample)]
        rows += [f"{i}," + ",".join(f"{float(v[i]):.6f},{float(v[i]) / (d * math.log(2)):.6f}" for v in per_sample.values())
                 for i in range(len(x))]
        write_text_atomic(a.csv, "\n".join(rows) + "\n")
    if a.json:
        print(json.dumps(report))
        return
    pm = lambda se, f: "" if se is None else f" +- {se:{f}}"  # noqa: E731
    for name in per_sample:
        r = report[name]
        print(f"{'exact NLL (ODE)' if name == 'exact' else 'ELBO bound'}: {r['bits_per_dim']:.4f}"
              f"{pm(r['bits_per_dim_se'], '.4f')} bits/dim, {r['nll_nats']:.2f}{pm(r['nll_nats_se'], '.2f')} "
              f"nats/sample (n={len(x)}, {r['nfe_per_sample']:.0f} {'ODE' if name == 'exact' else 'network'} "
              f"evaluations/sample, {r['seconds']:.0f} s)")
    print(f"units: {report['units']}" + (f"; per-sample values in {a.csv}" if a.csv else ""))


# what a run folder holds (train.py writes them): outputs of other commands may sit beside them, never over them
RUN_ENTRIES = ("config.json", "log.csv", "eval.csv", "last", "best", "samples", "evaluator", ".last.old", ".best.old")


def _check_outputs(outputs, inputs=(), runs=()):
    """Every output path, before the work is spent and before anything is written. outputs: (flag, path, kind) with
    kind "file" or "folder" (None: not given). Refused: a file where a folder goes or the reverse; an input of the
    same command, or (for a folder) one inside it; a run's own files, or the run folder itself as a folder of
    outputs. Missing folders are made when written."""
    given = [Path(i).resolve() for i in inputs if i and os.path.exists(i)]
    for flag, path, kind in outputs:
        if not path:
            continue
        p = Path(path).resolve()
        if p.exists() and p.is_dir() != (kind == "folder"):
            raise DiffusekitError(f"{flag} {path} is an existing {'folder' if p.is_dir() else 'file'}; it must be a "
                                  f"{kind} (nothing was written)")
        if any(i == p or (kind == "folder" and p in i.parents) for i in given):
            raise DiffusekitError(f"{flag} {path} would overwrite an input of this command; choose another path "
                                  f"(nothing was written)")
        for r in (Path(r).resolve() for r in runs if r):
            if (p == r and kind == "folder") or (r in p.parents and p.relative_to(r).parts[0] in RUN_ENTRIES):
                raise DiffusekitError(f"{flag} {path} would write into the run {r}'s own files; choose another path "
                                      f"(nothing was written)")
        above = p if p.is_dir() else next(q for q in p.parents if q.exists())
        if not above.is_dir():
            raise DiffusekitError(f"{flag} {path}: {above} is a file, not a folder (nothing was written)")
        if not os.access(above, os.W_OK):
            raise DiffusekitError(f"{flag} {path}: cannot write in {above} (nothing was written)")


def _samples_out(path, kind: str):
    """What `api.save_samples` writes at `path` for a run of this data kind: "file" or "folder"."""
    if path.endswith(".npz") or (kind == "vector" and path.endswith(".csv")):
        return "file"
    if kind == "vector":
        raise DiffusekitError(f"--out must be a .csv or .npz file for a table, got {path!r}")
    if os.path.splitext(path)[1].lower() in (".csv", ".json", ".txt", ".png", ".jpg", ".jpeg"):
        raise DiffusekitError(f"--out {path}: images are written as an .npz file or a folder of PNGs")
    return "folder"


def _check_finite(x: torch.Tensor, what: str):
    if not torch.isfinite(x).all():
        raise DiffusekitError(f"the {what} are not finite (NaN or infinite): is the run's checkpoint sound, and are "
                              f"the settings in range? (nothing was written)")


def _unused(a, flags, why: str):
    """Options given on the command line that the chosen method does not read: said, not silently ignored."""
    used = [f for f in flags if f in a.given]
    if used:
        raise DiffusekitError(f"{used[0]} {why}")


def _check_batch_size(b: int):
    if b < 1:
        raise DiffusekitError(f"--batch-size must be at least 1, got {b}")


def _check_flow_options(a):
    if a.method == "ode":
        _unused(a, ("--steps",), "is for --method ddim; the adaptive ODE takes --rtol / --atol")
    else:
        _unused(a, ("--rtol", "--atol"), "is for --method ode; DDIM takes --steps")


def cmd_encode(a):
    from tqdm.auto import tqdm

    from .likelihood import encode

    _check_batch_size(a.batch_size)
    _check_flow_options(a)
    device = pick_device(a.device)
    run = load_run(a.run, a.checkpoint, ema=not a.no_ema, device=device)
    if not a.out.endswith(".npz"):
        raise DiffusekitError(f"--out must be a .npz file, got {a.out!r}")
    _check_outputs([("--out", a.out, "file")], inputs=[a.data], runs=[a.run])
    x, _ = _run_data(run, a.data, a.n)
    m, zs, nfe, t0 = run.model_config, [], 0, time.time()
    D = unconditional(run.denoiser, m)
    for i in tqdm(range(0, len(x), a.batch_size), disable=a.no_progress, desc="encoding", unit="batch"):
        z, k = encode(D, x[i:i + a.batch_size].to(device), m.sigma_min, m.sigma_max, method=a.method, steps=a.steps,
                      rtol=a.rtol, atol=a.atol)
        zs.append(z.cpu())
        nfe += k * len(z)
    z = torch.cat(zs)
    _check_finite(z, "latents")
    save_npz_atomic(a.out, latents=z.numpy(), source=x.numpy(), method=np.array(a.method))
    print(f"wrote {len(x)} latents (unit variance, shape {tuple(x.shape[1:])}) to {a.out} "
          f"[{a.method}, {nfe / max(1, len(x)):.0f} network calls/sample, {time.time() - t0:.0f} s]")


def cmd_decode(a):
    from tqdm.auto import tqdm

    from .likelihood import decode

    _check_batch_size(a.batch_size)
    _check_flow_options(a)
    device = pick_device(a.device)
    run = load_run(a.run, a.checkpoint, ema=not a.no_ema, device=device)
    m = run.model_config
    if not a.latents.endswith(".npz"):
        raise DiffusekitError(f"--latents must be an .npz file written by diffusekit encode, got {a.latents!r}")
    _check_outputs([("--out", a.out, _samples_out(a.out, run.codec.kind))], inputs=[a.latents], runs=[a.run])
    try:
        with np.load(a.latents) as f:
            if "latents" not in f:
                raise DiffusekitError(f"{a.latents} has no 'latents' array (write it with diffusekit encode)")
            z = f["latents"]
            if np.iscomplexobj(z):
                raise DiffusekitError(f"{a.latents}: the latents are complex numbers; give real ones")
            z = torch.from_numpy(np.asarray(z, dtype=np.float32))
            source = torch.from_numpy(f["source"].astype(np.float32)) if "source" in f else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DiffusekitError(f"cannot read {a.latents}: {e}") from None
    if tuple(z.shape[1:]) != tuple(m.in_shape) or len(z) == 0:
        raise DiffusekitError(f"latents have shape {tuple(z.shape)}; this run needs N x {' x '.join(map(str, m.in_shape))}")
    D = unconditional(run.denoiser, m)
    xs, t0 = [], time.time()
    for i in tqdm(range(0, len(z), a.batch_size), disable=a.no_progress, desc="decoding", unit="batch"):
        x, _ = decode(D, z[i:i + a.batch_size].to(device), m.sigma_min, m.sigma_max, method=a.method,
                      steps=a.steps, rtol=a.rtol, atol=a.atol)
        xs.append(x.cpu())
    x = torch.cat(xs)
    _check_finite(x, "decoded samples")
    decoded = run.codec.decode(x)
    api.save_samples(a.out, decoded, kind=run.codec.kind, columns=getattr(run.codec, "columns", None))
    msg = f"wrote {len(x)} decoded samples to {a.out} [{a.method}, {time.time() - t0:.0f} s]"
    if source is not None and source.shape == x.shape:
        rel = float((x - source).flatten(1).norm(dim=1).div(source.flatten(1).norm(dim=1).clamp_min(1e-12)).max())
        msg += f"; round trip: max relative error {rel:.2e}, max abs error {float((x - source).abs().max()):.2e} (model space)"
    print(msg)


def _read_images(path: str) -> np.ndarray:
    """An .npz (arr_0), one image file, or a folder of images, as an N x H x W x C array (uint8 or float)."""
    from .evaluate import read_samples

    if path.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
        from PIL import Image, UnidentifiedImageError

        if not os.path.isfile(path):
            raise DiffusekitError(f"image {path} does not exist")
        try:
            a = np.asarray(Image.open(path))[None]
        except (UnidentifiedImageError, OSError) as e:
            raise DiffusekitError(f"cannot read image {path}: {e}") from None
    else:
        a = read_samples(path)
    return a[..., None] if a.ndim == 3 else a


def _measurement(a, run, images):
    """(operator, y in model space, sigma_y in model units, truth-sized input or None) for one restoration task."""
    from .data.codecs import ImageCodec
    from .inverse import AvgPool, Identity, Mask, parse_kernel, parse_mask

    c, size = run.codec.channels, run.codec.size
    sigma = getattr(a, "sigma", 0.0) or 0.0
    if sigma < 0 or not math.isfinite(sigma):
        raise DiffusekitError(f"--sigma must be a finite number >= 0 (image range [0, 1]), got {sigma:g}")
    if a.command == "inpaint":
        x = run.codec.encode(images)
        op = Mask(parse_mask(a.mask, len(x), size, a.seed))
        return op, op.A(x), 2 * sigma, x
    if a.command == "upscale":
        if a.factor < 2 or size % a.factor:
            raise DiffusekitError(f"--factor {a.factor} does not fit: the model makes {size}x{size} images, so the "
                                  f"factor must be >= 2 and divide {size}")
        small = size // a.factor
        return AvgPool(a.factor), ImageCodec(c, small).encode(images, unclipped=True), 0.0, None
    y = run.codec.encode(images, unclipped=True)
    if a.command == "denoise":
        if sigma <= 0:
            raise DiffusekitError(f"--sigma must be > 0 for denoising (the noise std, image range [0, 1]), got {sigma:g}")
        return Identity(), y, 2 * sigma, None
    return parse_kernel(a.kernel, size), y, 2 * sigma, None


def cmd_restore(a):
    from .inverse import Measurement, consistency, restore
    from .metrics import psnr, ssim

    _check_batch_size(a.batch_size)
    device = pick_device(a.device)
    run = load_run(a.run, a.checkpoint, ema=not a.no_ema, device=device)
    if run.codec.kind != "image":
        raise DiffusekitError(f"{a.command} needs an image model; {a.run} models vectors")
    out = a.out
    if not (out.endswith(".npz") or out.lower().endswith(".png") or not os.path.splitext(out)[1]):
        raise DiffusekitError(f"--out must be a .npz, a .png or a folder, got {out!r}")
    if a.compare and not a.compare.lower().endswith(".png"):
        raise DiffusekitError(f"--compare must be a .png file, got {a.compare!r}")
    if a.zeta < 0 or not math.isfinite(a.zeta):
        raise DiffusekitError(f"--zeta must be a finite number >= 0, got {a.zeta:g}")
    _check_outputs([("--out", out, "file" if out.endswith(".npz") or out.lower().endswith(".png") else "folder"),
                    ("--compare", a.compare, "file")], inputs=[a.images, a.truth], runs=[a.run])
    images = _read_images(a.images)
    op, y, sigma_y, given = _measurement(a, run, images)
    truth = given
    if a.truth:  # read before the restoration is spent and anything written
        truth = run.codec.encode(_read_images(a.truth))
        if len(truth) != len(y):
            raise DiffusekitError(f"--truth holds {len(truth)} images but --images holds {len(y)}")
    mmse, sample = getattr(a, "mmse", False), getattr(a, "sample", False)
    if mmse and sample:
        raise DiffusekitError("choose one of --mmse (posterior mean) and --sample (posterior samples)")
    if a.method and (mmse or sample) and a.method != ("sample" if sample else "tweedie"):
        raise DiffusekitError(f"--method {a.method} contradicts --{'sample' if sample else 'mmse'}")
    # defaults from benchmarks/RESULTS.md: RePaint restores masks, down-sampling and blur best
    method = a.method or ("sample" if sample else "tweedie" if a.command == "denoise" else "repaint")
    if method == "tweedie":
        _unused(a, ("--sampler", "--steps", "--temperature", "--eta", "--churn", "--s-tmin", "--s-tmax",
                    "--predictor-order", "--corrector-order"), "does not apply to --method tweedie (one denoiser "
                "call, no sampler)")
    for flag, only in (("--zeta", "dps"), ("--resample", "repaint")):
        if method != only:
            _unused(a, (flag,), f"is an option of --method {only}; the method here is {method}")
    k = a.n_samples
    if out.lower().endswith(".png") and len(y) * k > 1:
        raise DiffusekitError(f"--out {out} holds one image but there are {len(y) * k} restorations; use .npz or a folder")
    knobs = sampler_knobs(a)
    t0 = time.time()
    x = restore(unconditional(run.denoiser, run.model_config), run.model_config, op, y, sigma_y=sigma_y,
                method=method, n_samples=k, sampler=a.sampler, steps=a.steps, temperature=a.temperature,
                seed=a.seed, batch_size=a.batch_size, device=device, progress=not a.no_progress, zeta=a.zeta,
                resample=a.resample, **knobs)
    seconds = time.time() - t0
    _check_finite(x, "restorations")
    per_input = x.view(len(y), k, *x.shape[1:])
    mean, spread = per_input.mean(1), per_input.std(1) if k > 1 else None
    decoded = run.codec.decode(x)
    if out.endswith(".npz"):
        extra = {} if k == 1 else {"mean": run.codec.decode(mean), "std": (spread / 2).permute(0, 2, 3, 1).numpy()}
        save_npz_atomic(out, arr_0=decoded, **extra)
    else:
        if out.lower().endswith(".png"):
            from PIL import Image

            save_image_atomic(Image.fromarray(decoded[0, ..., 0] if decoded.shape[-1] == 1 else decoded[0]), out)
        else:
            api.save_samples(out, decoded)
        if k > 1:
            api.save_samples(os.path.join(out, "mean"), run.codec.decode(mean))
            api.save_samples(os.path.join(out, "std"), ((spread / 2).clamp(0, 0.5) * 510).round().byte()
                             .permute(0, 2, 3, 1).numpy())
    rms = consistency(Measurement(op.take(torch.arange(len(x)) // k), y.repeat_interleave(k, 0), sigma_y), x)
    msg = (f"wrote {len(x)} restorations ({len(y)} inputs x {k}) to {out} [{method}"
           + ("" if method == "tweedie" else f", {a.sampler}, {a.steps} steps") + f", {seconds / len(x):.2f} s/image]"
           f"\nmeasurement consistency: RMS(y - A x) = {float(rms.mean()) / 2:.4f} (image range [0, 1]; "
           f"noise sigma {sigma_y / 2:g})")
    if truth is not None and (a.truth or a.command != "inpaint"):
        to01 = lambda t: ((t.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)  # noqa: E731
        t = to01(truth)
        msg += (f"\nagainst the truth: PSNR {float(psnr(to01(per_input[:, 0]), t).mean()):.2f} dB, "
                f"SSIM {float(ssim(to01(per_input[:, 0]), t).mean()):.4f}")
        if k > 1:
            msg += f"; mean of {k}: PSNR {float(psnr(to01(mean), t).mean()):.2f} dB"
    if a.compare:
        _compare_figure(a.compare, run, op, y, per_input, mean, spread, truth if a.truth else None, a.command)
        msg += f"\nwrote comparison figure {a.compare}"
    print(msg)


def _compare_figure(path, run, op, y, per_input, mean, spread, truth, task):
    """Rows: input as given (degraded, shown at the model's size), restoration(s), [mean, spread], [truth]."""
    n = min(len(y), 16)
    shown = op.pinv(y[:n]) if task == "upscale" else y[:n]  # the small image, blown up (nearest) to full size
    rows = [shown] + [per_input[:n, j] for j in range(min(per_input.shape[1], 4))]
    if spread is not None:
        rows += [mean[:n], spread[:n] / spread[:n].amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) * 2 - 1]
    if truth is not None:
        rows.append(truth[:n])
    save_image_atomic(image_grid(run.codec.decode(torch.cat(rows)), nrow=n, scale=max(1, 64 // run.codec.size)), path)


def cmd_anomaly_fit(a):
    from .anomaly import Detector

    out = Path(a.out)
    _check_batch_size(a.batch_size)
    if a.run:
        _unused(a, ("--minutes", "--steps", "--preset", "--holdout"), "is a training setting; with --run the model is "
                "trained already (and all of --data is held out)")
    from .data import load_data

    data = load_data(a.data)
    det = Detector.fit(data, out, run_path=a.run, data_spec=a.data, minutes=a.minutes, preset=a.preset,
                       steps=a.steps, holdout=a.holdout, seed=a.seed, models=a.models, batch_size=a.batch_size,
                       features=a.features, device=a.device, progress=not a.no_progress)
    i = det.info
    runs = i["runs"]
    trained = "trained earlier" if a.run else f"trained on {i['n_train']} normal samples"
    print(f"detector saved in {out}: {'model' if len(runs) == 1 else f'mean of {len(runs)} models'} "
          f"{', '.join(runs)} ({trained}), scores fit on {i['n_fit']}, calibrated on {i['n_calibration']} "
          f"(smallest --fpr with a guarantee: {1 / (i['n_calibration'] + 1):.3g})")


def _scored(a):
    from .anomaly import Detector, check_fpr

    det = Detector.load(a.detector, pick_device(a.device))
    check_fpr(a.fpr, det.info["n_calibration"])
    # every output is checked before the scoring is spent and before anything is written
    if getattr(a, "maps", None) and det.info["kind"] != "image":
        raise DiffusekitError("--maps draws per-pixel maps and is for images; tables get per-column contributions")
    outs = [("--out", a.out), ("--maps", getattr(a, "maps", None))]
    _check_outputs([(f, p, "folder" if f == "--maps" or a.anomaly_command == "report" else "file") for f, p in outs],
                   inputs=[a.data], runs=det.run_paths)
    for flag, path in outs:
        if path and Path(path).exists() and Path(a.detector).resolve() in Path(path).resolve().parents:
            raise DiffusekitError(f"{flag} {path} would overwrite a file of the detector; choose another path "
                                  f"(nothing was written)")
    _check_batch_size(a.batch_size)
    from .data import load_data, split_column

    data = load_data(a.data, categorical=getattr(det.run.codec, "categories", {}))
    labels = None
    if a.anomaly_command == "report" and a.label_column:
        data, labels = split_column(data, a.label_column)
    elif a.anomaly_command == "report":
        if data.labels is None:
            raise DiffusekitError("report needs labels: --label-column NAME for a table, or arr_1 (1 = anomaly) in an .npz")
        labels = data.labels.numpy()
    if labels is not None:  # said before the scoring is spent
        labels = _binary_labels(labels)
    x, unseen = det.encode(data)
    return det, det.score(x, unseen, batch_size=a.batch_size, progress=not a.no_progress), labels, x, unseen


def _binary_labels(labels):
    """Labels as 0/1 ints; anything else (2, 0.4, -1) is an error, not a guess at what the user meant."""
    labels = np.asarray(labels, dtype=np.float64)
    y = np.rint(labels).astype(int)  # rint: table labels come back through float32
    bad = sorted({float(v) for v in labels[(np.abs(labels - y) > 1e-4) | ((y != 0) & (y != 1))]})
    if bad:
        raise DiffusekitError(f"labels must be 0 (normal) or 1 (anomaly); got {', '.join(f'{v:g}' for v in bad[:5])}"
                              f"{', ...' if len(bad) > 5 else ''}")
    if y.min() == y.max():
        raise DiffusekitError(f"the labels are all {'anomalies' if y[0] else 'normal'}: AUROC needs both kinds")
    return y


def cmd_anomaly_score(a):
    from .anomaly import UNSEEN_PENALTY

    if not a.out.endswith(".csv"):
        raise DiffusekitError(f"--out must be a .csv file, got {a.out!r}")
    out, data = Path(a.out).resolve(), Path(a.data).resolve()
    if out == data:  # the detector's own files are checked in _scored, once it is loaded
        raise DiffusekitError(f"--out {a.out} would overwrite the data it scores; choose another path (nothing was written)")
    det, r, _, x, unseen = _scored(a)
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = r["p_value"] <= a.fpr
    zs = list(r["z"])
    head = ["index", "score", "p_value", f"flag_at_fpr_{a.fpr:g}"] + [f"z_{k}" for k in zs]
    cols = det.info.get("columns")
    if cols:
        head += ["top_columns", "unseen_categories"]
    unseen_by_row = {}
    for i, c, v in unseen:
        unseen_by_row.setdefault(i, []).append(f"{c}={v}")
    rows = []
    for i in range(len(x)):
        row = [str(i), f"{float(r['score'][i]):.6g}", f"{float(r['p_value'][i]):.6g}", str(int(flags[i]))]
        row += [f"{float(r['z'][k][i]):.4g}" for k in zs]
        if cols:
            z = r["per_column_z"][i]
            top = torch.argsort(z, descending=True)[:3]
            row += ["; ".join(f"{cols[j]} {float(z[j]):+.1f}" for j in top.tolist()), "; ".join(unseen_by_row.get(i, []))]
        rows.append(row)
    if a.maps:  # made before the scores are written: a folder that cannot be made leaves an earlier scores file
        os.makedirs(a.maps, exist_ok=True)
    write_csv_atomic(a.out, head, rows)
    msg = (f"scored {len(x)} samples -> {a.out}: {int(flags.sum())} flagged at --fpr {a.fpr:g} "
           f"(conformal p-value <= {a.fpr:g}; on normal data the flagged fraction is at most about {a.fpr:g})")
    if unseen:
        msg += (f"; {len(unseen)} unseen categor{'y' if len(unseen) == 1 else 'ies'} in {len(unseen_by_row)} rows (each adds "
                f"{UNSEEN_PENALTY:g} to the score; listed in unseen_categories)")
    if a.maps:
        from PIL import Image

        heat = r["per_dim_z"].mean(1).clamp(0, 5) / 5  # channel mean, 0 to 5 fit-split standard deviations
        for i, h in enumerate(heat):
            Image.fromarray((h * 255).round().byte().numpy()).save(os.path.join(a.maps, f"{i:06d}.png"))
        msg += f"; anomaly maps (white: >= 5 normal standard deviations of error) in {a.maps}"
    print(msg)


def cmd_anomaly_report(a):
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    from .viz import line_plot

    det, r, labels, x, unseen = _scored(a)
    y = labels
    s = r["score"].numpy()
    flags = (r["p_value"] <= a.fpr).numpy()
    tp, fp = int((flags & (y == 1)).sum()), int((flags & (y == 0)).sum())
    fn, tn = int((~flags & (y == 1)).sum()), int((~flags & (y == 0)).sum())
    rep = {"detector": str(a.detector), "data": a.data, "n": len(y), "n_anomalies": int(y.sum()),
           "auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s)), "fpr_target": a.fpr,
           "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
           "realised_fpr": fp / max(1, fp + tn), "tpr": tp / max(1, tp + fn),
           "auroc_per_component": {k: float(roc_auc_score(y, v.numpy())) for k, v in r["z"].items()}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    f, t, _ = roc_curve(y, s)
    line_plot(f, t, "false-positive rate", "true-positive rate", f"ROC, AUROC {rep['auroc']:.3f}",
              diagonal=True).save(out / "roc.png")
    pr, rc, _ = precision_recall_curve(y, s)
    line_plot(rc, pr, "recall", "precision", f"precision-recall, AUPRC {rep['auprc']:.3f}").save(out / "pr.png")
    write_text_atomic(out / "report.json", json.dumps(rep, indent=2) + "\n")
    print(f"AUROC {rep['auroc']:.4f}, AUPRC {rep['auprc']:.4f} (n = {len(y)}, {int(y.sum())} anomalies); at --fpr "
          f"{a.fpr:g}: {tp} TP, {fp} FP, {fn} FN, {tn} TN (false-positive rate {rep['realised_fpr']:.4f}) -> "
          f"{out}/report.json, roc.png, pr.png")


def cmd_info(a):
    run = load_run(a.run)
    m = run.model_config
    n_params = sum(p.numel() for p in run.denoiser.parameters())
    t = run.config.get("train", {})
    _, state = load_checkpoint(Path(a.run) / "last", stems=())
    lines = [
        f"run          {Path(a.run).resolve()}",
        f"data         {t.get('data')}  ({m.kind}, shape {tuple(m.in_shape)}"
        + (f", {m.num_classes} classes: {', '.join(run.class_names)}" if m.num_classes else ", unconditional") + ")",
        f"model        {m.preset} {'U-Net' if m.kind == 'image' else 'residual MLP'}, {n_params / 1e6:.2f}M parameters, "
        f"{m.parameterization} parameterization, sigma_data {m.sigma_data}, sigma in [{m.sigma_min:.3g}, {m.sigma_max:.3g}]",
        f"objective    noise {t.get('noise')}, weighting {t.get('weighting')}, lr {t.get('lr')}, batch {t.get('batch_size')}",
        f"trained      {state['step']} steps, {state['nimg']} images, {state['elapsed'] / 60:.1f} min",
        f"checkpoints  {', '.join(c for c in ('last', 'best') if (Path(a.run) / c).is_dir())}",
    ]
    log = Path(a.run) / "log.csv"
    if log.exists():
        rows = log.read_text().strip().splitlines()
        if len(rows) > 1:
            last = dict(zip(rows[0].split(","), rows[-1].split(",")))
            try:
                lines.append(f"last log     step {int(last['step'])}, loss {float(last['loss']):.4f}, "
                             f"{float(last['img_per_s']):.0f} img/s")
            except (KeyError, ValueError):  # the run is usable without its log
                lines.append(f"last log     unreadable: {log} is damaged")
    print("\n".join(lines))


def cmd_evaluate(a):
    from .evaluate import Evaluator

    _check_outputs([("--json", a.json, "file")], inputs=[a.samples, a.reference])
    ev = Evaluator(a.reference, cache_dir=a.cache_dir, n_boot=a.bootstrap, progress=True)
    result = ev(a.samples)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        write_text_atomic(a.json, text + "\n")
        print(f"wrote {a.json}", file=sys.stderr)


def cmd_demo(a):
    out = Path(a.out)
    k = 2
    while (out / "config.json").exists():  # never overwrite an earlier demo
        out = Path(f"{a.out}-{k}")
        k += 1
    cfg = TrainConfig(data="digits", out=str(out), preset="small", minutes=a.minutes, batch_size=128,
                      seed=a.seed, sample_every=0, ckpt_every=500)
    print(f"training a class-conditional U-Net on scikit-learn's 8x8 digits for {a.minutes} min -> {out}")
    Trainer(cfg, progress=not a.no_progress).run()
    run = load_run(out)
    m = run.model_config
    labels = torch.arange(100) % 10
    x = api.sample(run.denoiser, m, 100, steps=20, seed=a.seed, labels=labels)
    image_grid(run.codec.decode(x), nrow=10, scale=4).save(out / "demo_grid.png")
    # temperature strip: the same 10 seeds (one per class) at temperatures 0, 0.5, 1, 1.5 (rows)
    rows = [api.sample(run.denoiser, m, 10, steps=20, seed=a.seed, labels=torch.arange(10), temperature=t)
            for t in (0.0, 0.5, 1.0, 1.5)]
    image_grid(run.codec.decode(torch.cat(rows)), nrow=10, scale=4).save(out / "demo_temperature.png")
    # trajectory: x (top) and D(x) (bottom) at each step, for one sample
    frames_x, frames_d = [], []
    # x is shown as x / sqrt(1 + sigma^2) (the VP view) so that high-noise frames stay in range
    cb = lambda s: (frames_x.append(s["x"][:1] / (1 + s["sigma"] ** 2) ** 0.5), frames_d.append(s["denoised"][:1]))  # noqa: E731
    final = api.sample(run.denoiser, m, 1, steps=20, seed=a.seed, labels=torch.tensor([3]), callback=cb)
    strip = torch.cat(frames_x + [final] + frames_d + [final])
    image_grid(run.codec.decode(strip), nrow=len(frames_x) + 1, scale=4).save(out / "demo_trajectory.png")
    print(f"samples (one row per class 0-9):            {out / 'demo_grid.png'}\n"
          f"temperature strip (rows: T = 0, 0.5, 1, 1.5): {out / 'demo_temperature.png'}\n"
          f"denoising trajectory (top: x, bottom: D(x)): {out / 'demo_trajectory.png'}\n"
          f"run (checkpoint, log, config):               {out}\n"
          f"next: diffusekit sample {out} --n 64 --grid grid.png")


# ---------------------------------------------------------------------------------------------------------


# torchrun's own parser reads a bare --n as an ambiguous prefix of its options: spell it --n-samples there
N_HELP = "number of samples (under torchrun write --n-samples)"


def run_options(q, batch_size):
    """Options of every command that loads a run."""
    q.add_argument("--batch-size", type=int, default=batch_size)
    q.add_argument("--checkpoint", default="last", help="last or best")
    q.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    q.add_argument("--no-progress", action="store_true")


def knob_options(p):
    """The sampler knobs (samplers.KNOBS) as options, for every command that runs a sampler."""
    p.add_argument("--eta", type=float, default=None, help="ddim / dpmpp-2m-sde / dpmpp-3m-sde / sa-solver stochasticity")
    p.add_argument("--churn", type=float, default=None, help="euler / heun EDM churn")
    p.add_argument("--s-tmin", type=float, default=None,
                   help="euler / heun / dpmpp-*-sde / sa-solver: inject noise only at sigma >= this (default 0)")
    p.add_argument("--s-tmax", type=float, default=None,
                   help="euler / heun / dpmpp-*-sde / sa-solver: inject noise only at sigma <= this (default: no limit)")
    p.add_argument("--predictor-order", type=int, default=None, help="sa-solver: predictor order 1-4 (default 3)")
    p.add_argument("--corrector-order", type=int, default=None, help="sa-solver: corrector order 0-4 (default 4; 0: none)")


def sampler_knobs(a) -> dict:
    names = ("eta", "churn", "s_tmin", "s_tmax", "predictor_order", "corrector_order")
    return {k: getattr(a, k) for k in names if getattr(a, k) is not None}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is said in one line (as every other error is), pointing at --help; options
    are spelled out (no prefixes), so that `args.given` names every option given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="diffusekit", description="Train diffusion models and sample from them.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a data spec (or --resume a run)")
    _add_config_options(t, TrainConfig)
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate samples from a trained run")
    s.add_argument("run")
    s.add_argument("--n", "--n-samples", dest="n", type=int, default=64, help=N_HELP)
    s.add_argument("--sampler", choices=list(SAMPLERS), default=DEFAULT_SAMPLER)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--schedule", choices=list(GRIDS), default="karras", help="sigma grid")
    s.add_argument("--rho", type=float, default=None, help="karras grid: spacing exponent (default 7; larger: more steps at low noise)")
    s.add_argument("--sigma-min", type=float, default=None, help="lowest grid noise level (default: the model's)")
    s.add_argument("--sigma-max", type=float, default=None, help="highest grid noise level (default: the model's)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="FILE.npz, a folder for PNGs (images) or FILE.csv (vectors)")
    s.add_argument("--grid", help="FILE.png: a grid of (up to 256) samples, or a scatter plot for vectors")
    s.add_argument("--class", dest="class_label", type=int, default=None, help="class index (conditional runs)")
    s.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (1: none)")
    knob_options(s)
    run_options(s, 256)
    s.add_argument("--report", action="store_true", help="also print the mean exact NLL of the samples")
    s.set_defaults(func=cmd_sample)

    def ode_options(q):
        q.add_argument("--rtol", type=float, default=1e-5, help="ODE solver relative tolerance")
        q.add_argument("--atol", type=float, default=1e-5, help="ODE solver absolute tolerance")

    n = sub.add_parser("nll", help="negative log-likelihood of data under a run (bits/dim): exact (ODE) and ELBO")
    n.add_argument("run")
    n.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist:test, rows.csv, images.npz")
    n.add_argument("--n", "--n-samples", dest="n", type=int, default=1000, help="first N samples of the data (0: all)")
    n.add_argument("--method", choices=["ode", "elbo", "both"], default="ode")
    n.add_argument("--estimator", choices=["auto", "exact", "rademacher", "gaussian"], default="auto",
                   help="trace estimator (auto: exact for <= 32 dimensions, else Rademacher)")
    n.add_argument("--probes", type=int, default=1, help="Hutchinson probes per sample")
    ode_options(n)
    n.add_argument("--levels", type=int, default=32, help="ELBO: noise levels per sample")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--class-labels", action="store_true", help="conditional model: p(x | the data's labels)")
    n.add_argument("--json", action="store_true", help="print one JSON object")
    n.add_argument("--csv", help="write per-sample values to this CSV")
    run_options(n, 64)
    n.set_defaults(func=cmd_nll)

    for name, fn, what in (("encode", cmd_encode, "data -> latent noise (probability-flow ODE)"),
                           ("decode", cmd_decode, "latent noise -> data (inverse of encode)")):
        q = sub.add_parser(name, help=what)
        q.add_argument("run")
        if name == "encode":
            q.add_argument("--data", "--images", dest="data", required=True, help="data spec: .npz, folder, .csv, ...")
            q.add_argument("--n", "--n-samples", dest="n", type=int, default=0, help="first N samples (0: all)")
            q.add_argument("--out", required=True, help="latents .npz (latents, source)")
        else:
            q.add_argument("--latents", required=True, help=".npz written by encode (or any 'latents' array)")
            q.add_argument("--out", required=True, help=".npz, a folder for PNGs, or .csv (vectors)")
        q.add_argument("--method", choices=["ode", "ddim"], default="ode", help="adaptive ODE, or DDIM (fast)")
        q.add_argument("--steps", type=int, default=50, help="ddim steps")
        ode_options(q)
        run_options(q, 256)
        q.set_defaults(func=fn)

    for name, what in (("inpaint", "fill masked pixels"), ("upscale", "super-resolution by an integer factor"),
                       ("denoise", "remove Gaussian noise of known sigma"), ("deblur", "undo a known blur (+ noise)")):
        r = sub.add_parser(name, help=f"{what} with any trained image model")
        r.add_argument("run")
        r.add_argument("--images", required=True, help=".npz (arr_0: uint8 0-255 or float in [0, 1]), an image "
                       "file, or a folder of images" + (" at 1/factor of the model's size" if name == "upscale" else ""))
        r.add_argument("--out", required=True, help=".npz, .png (one image) or a folder of PNGs")
        if name == "inpaint":
            r.add_argument("--mask", required=True, help="box:SIZE (centre box), random:FRACTION (missing), "
                           "half[:left|right|top|bottom], or a mask image (nonzero = fill)")
        if name == "upscale":
            r.add_argument("--factor", type=int, default=2)
        if name == "deblur":
            r.add_argument("--kernel", required=True, help="gaussian:SIGMA or box:SIZE (periodic boundary)")
        if name in ("denoise", "deblur", "inpaint", "upscale"):
            r.add_argument("--sigma", type=float, default=None if name == "denoise" else 0.0, required=name == "denoise",
                           help="std of the measurement noise, image range [0, 1]")
        if name == "denoise":
            r.add_argument("--mmse", action="store_true", help="the posterior mean, one network call (default)")
            r.add_argument("--sample", action="store_true", help="posterior samples (stochastic sampler)")
        r.add_argument("--method", choices=["ddnm", "repaint", "dps", "tweedie", "sample"], default=None,
                       help="default: " + ("tweedie (sample with --sample)" if name == "denoise" else "repaint"))
        r.add_argument("--sampler", choices=list(SAMPLERS), default="ddpm")
        r.add_argument("--steps", type=int, default=20)
        r.add_argument("--temperature", type=float, default=1.0)
        r.add_argument("--n-samples", type=int, default=1, help="restorations per input (their mean and spread "
                       "are written too)")
        r.add_argument("--seed", type=int, default=0)
        r.add_argument("--truth", help="the clean images, to print PSNR / SSIM and show in --compare")
        r.add_argument("--compare", help="FILE.png: input, restoration(s), mean and spread, truth")
        r.add_argument("--zeta", type=float, default=1.0, help="dps: step size of the measurement gradient")
        r.add_argument("--resample", type=int, default=4, help="repaint: resamplings per step")
        knob_options(r)
        run_options(r, 64)
        r.set_defaults(func=cmd_restore)

    an = sub.add_parser("anomaly", help="anomaly detection: fit on normal data, score, report")
    asub = an.add_subparsers(dest="anomaly_command", required=True)
    f = asub.add_parser("fit", help="train models of normal data (or reuse --run), fit and calibrate the scores")
    f.add_argument("--data", required=True, help="normal data: a data spec (.csv, .npz, folder, digits, ...)")
    f.add_argument("--out", required=True, help="detector folder")
    f.add_argument("--run", action="append", help="reuse this trained run (then all of --data is held out for fit + "
                   "calibration); repeat it to score with the mean of several runs of the same data")
    f.add_argument("--minutes", type=float, default=3.0, help="training budget when no --run (shared by the models)")
    f.add_argument("--models", type=int, default=None,
                   help="models to train, with different seeds, and score with as one (their mean denoiser); default 3 "
                        "for tables, 1 for images")
    f.add_argument("--steps", type=int, default=0, help="train for this many steps (per model) instead of --minutes")
    f.add_argument("--preset", choices=["tiny", "small", "base", "large"], default=None)
    f.add_argument("--holdout", type=float, default=None,
                   help="fraction of --data kept from training to fit and calibrate the scores (default 0.3, up to 0.5 "
                        "when needed to hold out 40 samples)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--features", action="store_true",
                   help="also compare reconstructions in the shipped classifier's features (fashion-mnist, digits); it "
                        "was trained on every class of its set: not for anomalies that are classes of that set")
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=cmd_anomaly_fit)
    for name, fn in (("score", cmd_anomaly_score), ("report", cmd_anomaly_report)):
        q = asub.add_parser(name, help="score data (p-values, flags)" if name == "score" else
                            "AUROC, AUPRC, confusion matrix and ROC/PR plots against labels")
        q.add_argument("detector")
        q.add_argument("--data", required=True)
        q.add_argument("--out", required=True, help="scores .csv" if name == "score" else "report folder")
        q.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate of the flags")
        if name == "score":
            q.add_argument("--maps", help="folder for per-pixel anomaly maps (images)")
        else:
            q.add_argument("--label-column", default=None, help="table column: 1 = anomaly, 0 = normal (images: arr_1)")
        q.add_argument("--batch-size", type=int, default=256)
        q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        q.add_argument("--no-progress", action="store_true")
        q.set_defaults(func=fn)

    i = sub.add_parser("info", help="describe a run")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("evaluate", help="sample quality against a data spec (FCD, KID, precision/recall; vectors: "
                                         "energy distance)")
    e.add_argument("samples", help=".npz (arr_0), a folder of images, or a .csv table")
    e.add_argument("--reference", required=True, help="data spec, e.g. fashion-mnist:test")
    e.add_argument("--json", help="also write the figures to this JSON file")
    e.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples for standard errors")
    e.add_argument("--cache-dir", default=".diffusekit-cache", help="where a trained feature classifier is cached")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train on built-in digits for a few minutes and draw what it learned")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=float, default=3.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def _leave_process_group():
    """Under torchrun: wait for every rank, then tear the group down. A rank that exits with gloo's threads still up
    while another is finishing aborts ("terminate called without an active exception", SIGABRT) about one run in ten
    here, failing a command whose work was done."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.given = {str(t).split("=", 1)[0] for t in (sys.argv[1:] if argv is None else argv) if str(t).startswith("--")}
    try:
        args.func(args)
        _leave_process_group()
    except (DiffusekitError, OSError, zipfile.BadZipFile, csv.Error) as e:
        # our own errors, and files that cannot be read or written (missing folder, full disk, corrupt zip)
        msg = str(e) if isinstance(e, DiffusekitError) else f"{type(e).__name__}: {e}"
        print(f"diffusekit {args.command}: error: {msg}", file=sys.stderr)
        sys.exit(1)
    except (MemoryError, RuntimeError) as e:  # allocation failures only: any other RuntimeError is a bug to see
        if not isinstance(e, MemoryError) and not any(s in str(e) for s in ("allocate memory", "out of memory")):
            raise
        print(f"diffusekit {args.command}: error: out of memory ({str(e).splitlines()[0][:200]}); try a smaller "
              f"--batch-size or model", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"diffusekit {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
