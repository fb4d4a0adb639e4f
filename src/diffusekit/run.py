"""A Run: a trained model and everything it does, in the data's own units.

    run = dk.train("digits", out="runs/digits", minutes=3)     # or dk.load("runs/digits")
    images = run.sample(16, temperature=0.8, label=3)          # uint8 N x H x W x C (a DataFrame for a table)
    filled = run.inpaint(images, mask="half")                  # also upscale, denoise, deblur
    bpd = run.nll(images).bits_per_dim; back = run.decode(run.encode(images))

Inputs are data as a user holds it (a data spec or path, an array, a pandas DataFrame), checked against what the run
was trained on; batching, per-sample seeds, progress bars and the checks on results are written once, here and in
`runtime.map_batches`. The command line is these same calls.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .checkpoint import (PartialCsv, is_diffusers_folder, load_checkpoint, read_json, read_run_config, save_samples, write_json_atomic,
                         writer_lock)
from .config import check, check_choice
from .data import CsvRows, as_data, check_columns, csv_chunks, read_images, to_model_space
from .data.codecs import ImageCodec, codec_from_dict
from .data.text import PAD, read_texts
from .masked import sample_tokens
from .errors import DiffusekitError
from .inverse import (AvgPool, Identity, Mask, Measurement, RestoreConfig, consistency, parse_kernel, parse_mask,
                      restore, restore_grid)
from .likelihood import FlowConfig, NLLConfig, bits_per_dim, decode, encode, nll, summarize
from .metrics import psnr, ssim
from .model import ModelConfig, build_denoiser
from .precond import MeanDenoiser, unconditional
from .runtime import is_main_process, map_batches, pick_device, release_memory
from .samplers import VECTOR_TUNING, SampleConfig, sample, sampling_defaults
from .schedules import grid_name
from .train import CT_TARGETS, DISTILL_SETTINGS, TrainConfig, Trainer
from .tune import fit_grids
from .viz import image_grid


def latents_table(latents: np.ndarray, start: int = 0) -> tuple[list, list]:
    """Latents of table rows [N, D] as a CSV's header (index, z0, z1, ...) and rows (indices from `start`)."""
    return (["index"] + [f"z{j}" for j in range(latents.shape[1])],
            [[str(start + i), *map(float, z)] for i, z in enumerate(latents)])


def check_finite(x: torch.Tensor, what: str):
    """Results that are NaN or infinite (a spoiled checkpoint, an absurd setting) are an error, never written."""
    if not torch.isfinite(x).all():
        raise DiffusekitError(f"the {what} are not finite (NaN or infinite): is the run's checkpoint sound, and are "
                              f"the settings in range? (nothing was written)")


@dataclass
class Likelihood:
    """Per-sample negative log-likelihoods in the data's units (see `units`), by one method."""
    nats: np.ndarray
    nfe: np.ndarray  # network (or ODE) evaluations per sample
    method: str  # "ode" (exact) or "elbo" (an upper bound)
    dims: int
    units: str
    seconds: float

    @property
    def bits_per_dim(self) -> np.ndarray:
        return bits_per_dim(self.nats, self.dims)

    def summary(self) -> dict:
        """Means with their standard errors (None from one sample), evaluations per sample, seconds."""
        (m, se), (b, bse) = summarize(torch.as_tensor(self.nats)), summarize(torch.as_tensor(self.bits_per_dim))
        if len(self.nats) < 2:
            se = bse = None
        return {"nll_nats": m, "nll_nats_se": se, "bits_per_dim": b, "bits_per_dim_se": bse,
                "nfe_per_sample": float(np.mean(self.nfe)), "seconds": round(self.seconds, 2)}


@dataclass
class Latents:
    """Data carried to noise: `latents` (float32, the data's shape in model space, unit variance), the `source` data
    in model space (so a decode can say its round-trip error), the method and its cost."""
    latents: np.ndarray
    source: np.ndarray | None = None
    method: str = "ode"
    nfe_per_sample: float = 0.0
    seconds: float = 0.0

    def __len__(self):
        return len(self.latents)


@dataclass
class Restoration:
    """`images`: uint8 restorations N x K (input-major, N * K of them); with K > 1 also `mean` (uint8, per input) and
    `std` (float32 pixel-wise spread, [0, 1] units). `consistency`: RMS(y - A x) in [0, 1] units (about the noise
    sigma when consistent); with a clean `truth`: PSNR and SSIM of the first restoration, PSNR of the mean. `grid`:
    the sigma grid it ran on (tuned, karras, ...; None for tweedie)."""
    images: np.ndarray
    n_inputs: int
    n_samples: int
    method: str
    consistency: float
    seconds: float
    grid: str | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    psnr: float | None = None
    ssim: float | None = None
    psnr_mean: float | None = None
    figure_rows: list = field(default_factory=list, repr=False)  # model-space rows of `figure`

    def figure(self, codec, n: int = 16):
        """Rows: the input as given (a small image blown up), up to 4 restorations, [mean and spread], [truth]."""
        rows = [r[:n] for r in self.figure_rows]
        return image_grid(codec.decode(torch.cat(rows)), nrow=len(rows[0]), scale=max(1, 64 // max(codec.height, codec.width)))

GRIDS_FILE = "grids.json"


class Run:
    """A trained model: its denoiser (EMA weights unless asked otherwise), codec, configs and class names."""

    def __init__(self, path, config: dict, model_config: ModelConfig, codec, denoiser, step: int, class_names,
                 device="cpu"):
        self.path, self.config, self.model_config, self.codec = Path(path), config, model_config, codec
        self.denoiser, self.step, self.class_names, self.device = denoiser, step, list(class_names), device
        self.weights = ("last", True)  # the checkpoint and whether its EMA weights were loaded
        self.grids: dict = {}  # fitted sampling grids of these weights {steps: sigmas} (`tune_steps`)

    @classmethod
    def load(cls, path, checkpoint: str = "auto", ema: bool = True, device="auto") -> "Run":
        """A run folder written by `train` (checkpoint: last, best, or auto: best where the run chose it on held-out
        rows (`TrainConfig.holdout`), else last; ema: the EMA weights, else the raw ones), or a folder saved by
        diffusers (diffusers_io)."""
        path, device = Path(path), pick_device(device)
        if is_diffusers_folder(path):
            check(checkpoint in ("auto", "last") and ema, f"{path} is a diffusers folder: it holds one set of weights "
                  f"(no best checkpoint, no separate EMA)", "checkpoint")
            try:
                from .diffusers_io import load_diffusers
            except ImportError:
                raise DiffusekitError("reading a diffusers folder needs diffusers: pip install 'diffusekit[diffusers]'"
                                      ) from None
            run = load_diffusers(path, device)
        else:
            run = cls._load_run(path, checkpoint, ema, device)
        run.grids = (run._stored_grids() or {}).get("grids", {})
        return run

    @classmethod
    def _load_run(cls, path: Path, checkpoint: str, ema: bool, device) -> "Run":
        cfg = read_run_config(path)
        try:
            mcfg, codec = ModelConfig.from_dict(cfg["model"]), codec_from_dict(cfg["codec"])
        except (TypeError, KeyError, ValueError, AttributeError, DiffusekitError) as e:
            raise DiffusekitError(f"{path / 'config.json'} is damaged: its model or codec cannot be read ({e})") from None
        check(checkpoint in ("auto", "last", "best"), f"checkpoint must be auto, last or best, got {checkpoint!r}",
              "checkpoint")
        if checkpoint == "auto":
            checkpoint = "best" if cfg["train"].get("holdout") and (path / "best").is_dir() else "last"
        denoiser = build_denoiser(mcfg)
        tensors, meta = load_checkpoint(path / checkpoint)
        try:
            denoiser.net.load_state_dict(tensors["ema" if ema else "model"])
        except RuntimeError as e:
            raise DiffusekitError(f"checkpoint {path / checkpoint} does not match the run's model: "
                                  f"{str(e).splitlines()[0]}") from None
        denoiser.eval().requires_grad_(False).to(device)
        run = cls(path, cfg, mcfg, codec, denoiser, meta["step"], cfg.get("class_names", []), device)
        run.weights = (checkpoint, ema)
        return run

    @classmethod
    def ensemble(cls, paths, device="auto") -> "Run":
        """Runs of one data space (the same codec, shape and classes) as one Run whose denoiser is the mean of theirs
        (precond.MeanDenoiser); its other fields, noise range included, are the first run's. One path: that run."""
        runs = [cls.load(p, device=device) for p in paths]
        first = runs[0]
        for r in runs[1:]:
            if (r.config["codec"], r.model_config.in_shape, r.num_classes) != \
                    (first.config["codec"], first.model_config.in_shape, first.num_classes):
                raise DiffusekitError(f"runs {first.path} and {r.path} model different data (codec, shape or classes): "
                                      f"an ensemble needs runs of the same data space")
        if len(runs) == 1:
            return first
        mean = MeanDenoiser([r.denoiser for r in runs]).eval().requires_grad_(False)
        return cls(first.path, first.config, first.model_config, first.codec, mean, first.step, first.class_names,
                   first.device)

    @property
    def kind(self) -> str:
        return self.codec.kind

    @property
    def objective(self) -> str:
        """diffusion, or consistency for a run distilled into a consistency model (`distill`)."""
        return self.config.get("train", {}).get("objective", "diffusion")

    def _needs_gaussian(self, task: str):
        """Tasks written on the denoiser of Gaussian diffusion (the ODE, restoration, grids): not for masked text."""
        check(self.kind != "text", f"{task} is for the Gaussian diffusion of images and tables; this run models text "
              f"(masked diffusion: sample, infill, nll, anomaly)", "run")

    def _needs_denoiser(self, task: str):
        """Likelihoods and encodings integrate the probability-flow ODE of a denoiser (a posterior mean), tuned grids
        are fitted to that ODE, and restorations guide its sampling; a consistency model's D is the path's end instead
        (restorations with one were measured far worse than with its teacher: docs/restoration.md)."""
        if self.objective == "consistency":
            source = self.config.get("init_from", {}).get("path")
            raise DiffusekitError(f"{self.path} is a consistency model (distilled): {task} needs a diffusion model's "
                                  f"denoiser{f'; use the run it was distilled from, {source}' if source else ''}")

    @property
    def num_classes(self) -> int:
        return self.model_config.num_classes

    def __repr__(self):
        return f"Run({str(self.path)!r}, {self.kind}, shape {tuple(self.model_config.in_shape)}, step {self.step})"

    # ----- data in and out -----------------------------------------------------------------------------------

    def to_model_space(self, data, n: int = 0, unseen: list | None = None, labels=None):
        """(data in this run's model space [N, *in_shape], its labels or None): data as `data.as_data` takes it,
        typed and checked against what the run was trained on; its first n samples (0: all). labels: the data's
        labels, where the data do not carry them (an array, a DataFrame)."""
        check(isinstance(n, int) and n >= 0, f"n must be >= 0 (0: all), got {n}", "n")
        if isinstance(data, (str, os.PathLike)) and str(data).endswith(".csv") and self.kind == "vector":
            data = next(csv_chunks(os.fspath(data), 1 << 62))  # typed by the run's codec, as nll_csv reads it
        if isinstance(data, CsvRows):
            return self._rows_to_model_space(data, n, unseen, labels)
        if self.kind == "text":
            texts = read_texts(data, self.codec)
            x = self.codec.encode(texts[:n or None], unseen)
            return x, None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)[:len(x)]
        size = tuple(self.model_config.in_shape[1:]) if self.kind == "image" else None
        target = self.codec.target
        d = as_data(data, image_size=size, categorical=[*getattr(self.codec, "categories", {}),
                                                        *([target["column"]] if target else [])],
                    image_fit=self.config.get("train", {}).get("image_fit", "crop"))
        if target and target["column"] in d.codec.columns:  # its target column: the labels, in the run's classes
            d = self._split_target(d, labels is None)
        if labels is not None:
            d = replace(d, labels=torch.as_tensor(np.asarray(labels), dtype=torch.long))
        if n:
            d = replace(d, x=d.x[:n], labels=None if d.labels is None else d.labels[:n])
        return to_model_space(d, self.codec, self.model_config.in_shape, "the run was trained on", unseen), d.labels

    def _rows_to_model_space(self, rows: CsvRows, n, unseen, labels):
        """Rows of a CSV (read in parts: `data.csv_chunks`) typed by this run's codec, as the whole file would be."""
        check(self.kind == "vector", f"rows of a CSV are data for a run of tables; this run models {self.kind}s", "data")
        cells, columns = rows.cells[:n or None], list(rows.columns)
        target = self.codec.target
        if target and target["column"] in columns:  # its target column: the labels, in the run's classes
            j = columns.index(target["column"])
            found = self._class_index([str(v) for v in cells[:, j]])
            labels = found if labels is None else labels
            cells, columns = np.delete(cells, j, 1), columns[:j] + columns[j + 1:]
        check_columns(columns, self.codec.columns, "the run was trained on")
        x = self.codec.encode(cells, unseen=unseen, row0=rows.start + 1)
        return x, None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.long)[:len(x)]

    def _class_index(self, values) -> torch.Tensor:
        """The class indices of a target column's values, with a one-line error for a class never trained on."""
        name, lookup = self.codec.target["column"], {v: k for k, v in enumerate(self.class_names)}
        bad = next((v for v in values if v not in lookup), None)
        check(bad is None, f"column {name!r}: class {bad!r} was not in the training data (classes: "
              f"{', '.join(self.class_names[:10])})", "data")
        return torch.tensor([lookup[v] for v in values], dtype=torch.long)

    def _split_target(self, d, keep_labels: bool):
        """A table holding the run's target column: the other columns, and (keep_labels) its values as labels."""
        name = self.codec.target["column"]
        j = d.codec.columns.index(name)
        labels = self._class_index([str(v) for v in d.codec.decode(d.x)[:, j]]) if keep_labels else d.labels
        x, codec = d.codec.split(d.x, name)
        return replace(d, x=x, codec=codec, labels=labels)

    def to_user(self, x: torch.Tensor, labels=None):
        """Model space -> the data's units: uint8 images N x H x W x C, or a DataFrame with the table's columns (a
        run trained with a target column: with that column, the class names of `labels`, in its place)."""
        out = self.codec.decode(x)
        if self.kind == "vector":
            frame = pd.DataFrame(out, columns=self.codec.columns)
            target = self.codec.target
            if target and labels is not None:
                frame.insert(target["index"], target["column"], np.asarray(self.class_names, dtype=object)[labels])
            return frame
        return out

    # ----- generation ----------------------------------------------------------------------------------------

    def sample(self, n: int = 64, *, label=None, labels=None, where=None, return_labels=False, callback=None,
               progress=False, **options):
        """n samples in the data's units. options: those of `samplers.SampleConfig` (sampler, steps, grid, rho,
        sigma_min, sigma_max, temperature, seed, guidance, batch_size) and the sampler's knobs (eta, churn, ...).
        label: one class for all (a conditional run; else random classes drawn from the seed), or labels: one per
        sample. where: {column: value} for a table trained with a target column, rows of that class only (as label).
        callback: sees every step's state (model space). return_labels: also return the labels used. A
        distilled run samples with its own defaults (samplers.CONSISTENCY_SAMPLING) where options do not say."""
        c = self._sample_config(options)
        labels = self._sample_labels(n, c.seed, label, labels, where)
        x = sample(self.denoiser, self.model_config, n, c, labels=labels, device=self.device, callback=callback,
                   progress=progress, tuned=self.grids)
        check_finite(x, "samples")
        out = self.to_user(x, labels)
        return (out, None if labels is None else labels.numpy()) if return_labels else out

    def sample_csv(self, n: int, out, *, label=None, labels=None, where=None, resume=False, chunk_rows: int = 10_000,
                   progress=False, **options) -> dict:
        """`sample` of a table, n rows of any number written to the CSV `out` as they are drawn, `chunk_rows` at a time
        (memory does not grow with n; row i is drawn from its own seed, so the file is the one `sample` writes at
        once); checkpoint.PartialCsv: resume continues an interrupted run. Returns {"n", "resumed_at"}."""
        check(self.kind == "vector", f"sample_csv writes the rows of a table; this run models {self.kind}s", "out")
        check(isinstance(chunk_rows, int) and chunk_rows >= 1, f"chunk_rows must be at least 1, got {chunk_rows}",
              "chunk_rows")
        c = self._sample_config(options)
        labels = self._sample_labels(n, c.seed, label, labels, where)
        settings = {"n": n, **{k: v for k, v in c.to_dict().items() if k != "batch_size"},
                    "labels": None if labels is None else hashlib.sha256(labels.numpy().tobytes()).hexdigest()}
        stream = PartialCsv(out, resume, settings)
        with tqdm(total=n, initial=stream.done, disable=not progress, desc="sampling", unit="row") as bar:
            for start in range(stream.done, n, chunk_rows):
                part = None if labels is None else labels[start:start + chunk_rows]
                x = sample(self.denoiser, self.model_config, min(chunk_rows, n - start), c, labels=part,
                           device=self.device, tuned=self.grids, start=start)
                try:
                    check_finite(x, "samples")
                    frame = self.to_user(x, part)
                    stream.write(list(frame.columns), frame.to_numpy(), exact=True)
                except DiffusekitError as e:
                    raise stream.stopped(e, start) from None
                bar.update(len(x))
                del x, frame
                release_memory()
        stream.finish()
        return {"n": n, "resumed_at": stream.done if resume else None}

    def _sample_labels(self, n, seed, label, labels, where):
        """The class of each of n samples (None: unconditional): `label` for all, `labels`, `where`'s class, a
        table's target classes in their training proportions, or classes drawn from the seed."""
        check(isinstance(n, int) and n >= 1, f"n must be at least 1, got {n}", "n")
        target = self.codec.target
        if where is not None:
            check(label is None and labels is None, "give where or label(s), not both", "where")
            label = self.class_of(where)
        if labels is None and label is None and target:  # a table's target: its classes in the training proportions
            return torch.multinomial(torch.tensor(target["weights"]), n, replacement=True,
                                     generator=torch.Generator().manual_seed(seed))
        if labels is None:
            return self.model_config.pick_labels(n, seed, label)
        check(label is None, "give label (one class for all) or labels (one per sample), not both", "label")
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        check(self.num_classes > 0 and labels.shape == (n,) and 0 <= int(labels.min()) and
              int(labels.max()) < self.num_classes, f"labels must be {n} classes of 0..{self.num_classes - 1}",
              "labels")
        return labels

    def infill(self, texts, *, mask: str = "_", progress=False, **options) -> list:
        """Text with its `mask` characters filled by the model (the inpainting of text): texts as `data.text.read_texts`
        takes them (a list of strings, a file of lines, a text:FILE spec). options: steps (default: one position a
        step), temperature, seed, batch_size, as for `sample`."""
        check(self.kind == "text", "infill fills characters of text; this run models " + self.kind + "s", "run")
        check(isinstance(mask, str) and len(mask) == 1, f"mask is one character, got {mask!r}", "mask")
        z = self.codec.encode(read_texts(texts, self.codec), masked=mask)
        z[z == -1] = self.model_config.vocab
        holes = int((z == self.model_config.vocab).sum(1).max())
        check(holes > 0, f"no {mask!r} in the text: nothing to fill", "mask")
        c = self._sample_config({"steps": holes, **{k: v for k, v in options.items() if v is not None}})
        out = map_batches(lambda idx, seeds: sample_tokens(self.denoiser, z[idx].to(self.device), c.steps, seeds=seeds,
                                                           temperature=c.temperature),
                          len(z), c.batch_size, seed=c.seed, desc="infilling", progress=progress)
        return self.codec.decode(out)

    def class_of(self, where: dict) -> int:
        """The class index that {column: value} names: the value of a table's target column."""
        target = self.codec.target
        check(isinstance(where, dict) and len(where) == 1, "where is one {column: value}", "where")
        (column, value), = where.items()
        check(target is not None, "where needs a table trained with a target column (train --target COLUMN); "
              "this run has none", "where")
        check(column == target["column"], f"where: rows are drawn by the target column {target['column']!r}, not "
              f"{column!r}", "where")
        check(str(value) in self.class_names, f"where: column {column!r} never had the value {value!r} (values: "
              f"{', '.join(self.class_names[:10])}{', ...' if len(self.class_names) > 10 else ''})", "where")
        return self.class_names.index(str(value))

    def sampling(self, **options) -> str:
        """What `sample` with these options runs, in words: sampler, steps and the grid it resolves to."""
        c = self._sample_config(options)
        if self.kind == "text":
            return f"unmasking, {c.steps} step{'s' * (c.steps != 1)} (temperature {c.temperature:g})"
        grid = grid_name(c.grid, c.steps, self.grids, c.rho, c.sigma_min, c.sigma_max)
        knobs = "".join(f", {k} {v:g}" for k, v in c.knobs.items())
        bounds = ", ".join(f"{k} {v:g}" for k, v in (("sigma_min", c.sigma_min), ("sigma_max", c.sigma_max),
                                                      ("rho", c.rho)) if v is not None)
        return f"sampler {c.sampler}{knobs}, {c.steps} step{'s' * (c.steps != 1)}, " + (
            "the run's tuned grid" if grid == "tuned" else f"{grid} grid" + (f" ({bounds})" if bounds else ""))

    def _sample_config(self, options: dict) -> SampleConfig:
        given = {k: v for k, v in options.items() if v is not None and not (k == "sampler" and v == "auto")}
        if self.kind == "text":  # unmasking, one position per step by default
            odd = sorted(k for k in given if k not in ("steps", "temperature", "seed", "batch_size"))
            check(not odd, f"{', '.join(odd)}: text samples by unmasking; it takes steps, temperature, seed and "
                  f"batch_size", *odd)
            return SampleConfig.from_options(**{"steps": self.model_config.in_shape[0], **given})
        # its grid and knobs belong to its sampler: another sampler takes none of them
        steps = given.get("steps", SampleConfig.steps)
        grid = grid_name(given.get("grid", "auto"), steps, self.grids, given.get("rho"), given.get("sigma_min"),
                         given.get("sigma_max")) if isinstance(steps, int) else "auto"
        defaults = sampling_defaults(self.objective, self.kind, steps, grid=grid,
                                     sigma_range=(self.model_config.sigma_min, self.model_config.sigma_max))
        if given.get("sampler", defaults.get("sampler")) != defaults.get("sampler"):
            defaults = {}
        return SampleConfig.from_options(**{**defaults, **given})

    def tune_steps(self, steps, *, n: int = 256, order: int = 1, seed: int = 0, candidates: int = 0,
                   contraction: float = 0.0, batch_size: int = 128) -> dict:
        """Fit a sampling grid to this model for each step count (`tune.fit_grids`: GITS-style dynamic programming on a
        fine teacher solution) and store them with the run (grids.json, for these weights), so that `sample` with
        these steps uses them by default. contraction: a step's error counts less for landing at a high noise level
        (`tune.contraction_weights`). Returns {steps: (sigmas, summed (weighted) local error)}."""
        self._needs_gaussian("tune_steps")
        self._needs_denoiser("tune_steps (fitting the steps of its probability-flow ODE)")
        check(not isinstance(self.denoiser, MeanDenoiser), "tune_steps fits the grids of one run, stored in its folder; "
              "this is an ensemble of runs", "run")
        with writer_lock(self.path, "tune-steps"):
            return self._tune_steps(steps, n, order, seed, candidates, contraction, batch_size)

    def _tune_steps(self, steps, n, order, seed, candidates, contraction, batch_size) -> dict:
        fitted = fit_grids(self.denoiser, self.model_config, steps, n=n, order=order, seed=seed, candidates=candidates,
                           contraction=contraction, batch_size=batch_size, device=self.device)
        stored = self._stored_grids() or {}  # the grids of other step counts stay, each with how it was fitted
        grids = {**stored.get("grids", {}), **{k: [float(f"{v:.8g}") for v in sig] for k, (sig, _) in fitted.items()}}
        how = {**stored.get("fitted", {}), **{str(k): {"order": order, "n": n, "seed": seed, "contraction": contraction}
                                              for k in fitted}}
        write_json_atomic(self.path / GRIDS_FILE, {
            "checkpoint": self.weights[0], "ema": self.weights[1], "step": self.step,
            "grids": {str(k): grids[k] for k in sorted(grids)}, "fitted": {k: how[k] for k in sorted(how, key=int)}})
        self.grids = grids
        return fitted

    def _stored_grids(self) -> dict | None:
        """grids.json when it was fitted to the weights loaded (checkpoint, EMA, step), else None."""
        f = self.path / GRIDS_FILE
        if not f.exists():
            return None
        try:
            g = read_json(f)
            fits = (g["checkpoint"], g["ema"], g["step"]) == (*self.weights, self.step)
            grids = {int(k): [float(v) for v in sig] for k, sig in g["grids"].items()}
            fitted = dict(g.get("fitted", {}).items())  # how each grid was fitted (absent in older files)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DiffusekitError(f"{f} is damaged ({e}); delete it or run tune-steps again") from None
        if any(len(sig) != k + 1 or sig[-1] != 0 or any(a <= b for a, b in zip(sig, sig[1:]))
               for k, sig in grids.items()):
            raise DiffusekitError(f"{f} is damaged (a grid that is not descending to 0 with its steps' length); "
                                  f"delete it or run tune-steps again")
        return {**g, "grids": grids, "fitted": fitted} if fits else None

    def temperature_strip(self, labels=None, temperatures=(0.0, 0.5, 1.0, 1.5), n: int = 10, **options):
        """The same n seeds (labels: one class each, for a conditional run) at each temperature, one row per
        temperature: len(temperatures) * n samples, row-major."""
        rows = [self.sample(n, labels=labels, **{**options, "temperature": float(t)}) for t in temperatures]
        return pd.concat(rows, ignore_index=True) if self.kind == "vector" else np.concatenate(rows)

    def trajectory(self, label=None, **options) -> np.ndarray:
        """One image's path from noise: the state x at each step (shown as x / sqrt(1 + sigma^2), in range), then the
        final sample, then the denoiser's guess D(x) at each step and the final sample again: 2 * (steps + 1) images,
        two rows."""
        check(self.kind == "image", "a trajectory is drawn for images; this run models vectors", "run")
        xs, ds = [], []

        def keep(s):
            xs.append(s["x"][:1] / (1 + s["sigma"] ** 2) ** 0.5)
            ds.append(s["denoised"][:1])
        final = self.codec.encode(self.sample(1, label=label, callback=keep, **options))
        return self.codec.decode(torch.cat(xs + [final] + ds + [final]))

    # ----- likelihood and encoding ---------------------------------------------------------------------------

    def nll(self, data, *, n: int = 0, labels=None, class_labels=False, progress=False, **options) -> Likelihood:
        """Per-sample negative log-likelihood of data (its first n samples; 0: all) in its own units: 8-bit images
        dequantized (the discrete-data bound), tables in their columns' units. options: `likelihood.NLLConfig`
        (method ode | elbo, ...). class_labels: -ln p(x | the data's labels) for a conditional run (labels: those
        labels, where the data do not carry them)."""
        self._needs_denoiser("the likelihood")
        if self.kind == "text":  # the bound of masked diffusion; there is no ODE for tokens
            check(options.get("method", "elbo") == "elbo", "text's likelihood is masked diffusion's bound: method elbo "
                  "(there is no probability-flow ODE for tokens)", "method")
            options = {**options, "method": "elbo"}
        c = NLLConfig.from_dict(options)
        x, labels = self.to_model_space(data, n, labels=labels)
        if self.kind == "text" and self.codec.mode == "text":  # windows of a document: a shorter text has no density
            short = (x == PAD).any(1).nonzero().flatten()
            check(len(short) == 0, f"this run reads windows of {self.codec.length} characters; text {int(short[0]) + 1 if len(short) else 0} "
                  f"is shorter (measure whole windows, or train on lines:FILE for lines)", "data")
        if class_labels:
            check(labels is not None, "class_labels: the data have no labels", "class_labels")
            check(self.num_classes > 0, "class_labels: this run is unconditional", "class_labels")
            check(0 <= int(labels.min()) and int(labels.max()) < self.num_classes,
                  f"class_labels: the data have labels outside the run's {self.num_classes} classes", "class_labels")
        t0 = time.time()
        r = nll(self.denoiser, self.model_config, self.codec, x, c, labels=labels if class_labels else None,
                device=self.device, progress=progress, start=getattr(data, "start", 0))
        check_finite(r["nats"], "likelihoods")
        units = {"image": "8-bit images, uniformly dequantized (discrete-data bound)",
                 "text": "characters (bits per character: an upper bound, masked diffusion's ELBO)"}.get(
            self.kind, "data units (the codec's standardization undone)")
        return Likelihood(r["nats"].numpy(), r["nfe"].numpy(), c.method, x[0].numel(), units, time.time() - t0)

    def nll_csv(self, path, out=None, *, methods=None, n: int = 0, class_labels=False, resume=False,
                chunk_rows: int = 10_000, progress=False) -> dict:
        """`nll` of a table's CSV of any length, read and measured `chunk_rows` rows at a time (memory does not grow
        with the file; each row's probes are its own, so the values are those of the whole file), its per-row values
        written to the CSV `out` as they go (checkpoint.PartialCsv: resume continues an interrupted run). methods:
        {"ode" | "elbo": NLLConfig options} (default exact). Returns {"n", "dims", "units", "resumed_at", and per method
        ("exact", "elbo") the summary of `Likelihood.summary`}: means over every row, evaluations over those measured
        now."""
        self._needs_denoiser("the likelihood")
        methods = methods or {"ode": {}}
        check(set(methods) <= {"ode", "elbo"} and methods, "methods are ode and elbo", "methods")
        configs = [NLLConfig.from_dict({**methods[m], "method": m}).to_dict() for m in sorted(methods)]
        settings = {"class_labels": class_labels, **{k: [c[k] for c in configs] for k in configs[0]
                                                     if k != "batch_size"}}  # by parameter name, one per method
        stream = PartialCsv(out, resume, settings)
        names = {m: "exact" if m == "ode" else "elbo" for m in methods}
        sums = {k: np.zeros(4) for k in names.values()}  # rows, sum and sum of squares of nats, rows measured now
        nfe, t0, dims = dict.fromkeys(names.values(), 0.0), time.time(), None
        for part in stream.written(chunk_rows):
            for k, acc in sums.items():
                v = part[f"{k}_nats"].astype(float).to_numpy()
                acc[:3] += (len(v), v.sum(), (v * v).sum())

        def measure(chunk):
            nonlocal dims
            results = {names[m]: self.nll(chunk, class_labels=class_labels, **{**opts, "method": m})
                       for m, opts in methods.items()}
            for k, r in results.items():
                sums[k] += (len(r.nats), r.nats.sum(), (r.nats ** 2).sum(), len(r.nats))
                nfe[k] += float(r.nfe.sum())
                dims = r.dims
            return (["index"] + [f"{k}_{u}" for k in results for u in ("nats", "bits_per_dim")],
                    [[str(chunk.start + i)] + [f"{float(v):.6f}" for r in results.values()
                                               for v in (r.nats[i], r.bits_per_dim[i])] for i in range(len(chunk.cells))])

        rows = stream.fill(path, chunk_rows, measure, n=n, progress=progress, desc="nll")
        dims = dims or self.model_config.in_shape[0]
        report = {"n": rows, "dims": dims, "units": "data units (the codec's standardization undone)",
                  "resumed_at": stream.done if resume else None}
        for k, (count, total, squares, now) in sums.items():
            mean = float(total / count)
            se = math.sqrt(max(0.0, squares - count * mean * mean) / (count - 1) / count) if count > 1 else None
            per_bit = dims * math.log(2)
            report[k] = {"nll_nats": mean, "nll_nats_se": se, "bits_per_dim": mean / per_bit,
                         "bits_per_dim_se": None if se is None else se / per_bit,
                         "nfe_per_sample": nfe[k] / now if now else float("nan"), "seconds": round(time.time() - t0, 2)}
        return report

    def encode(self, data, *, n: int = 0, progress=False, **options) -> Latents:
        """Data (its first n samples; 0: all) -> latent noise of unit variance by the probability-flow ODE, so that
        `decode` gives it back. options: `likelihood.FlowConfig` (method ode | ddim, steps, rtol, atol, batch_size)."""
        self._needs_gaussian("encoding")
        self._needs_denoiser("encoding")
        c = FlowConfig.from_dict(options)
        x, _ = self.to_model_space(data, n)
        D, t0 = unconditional(self.denoiser, self.model_config), time.time()
        z, nfe = map_batches(lambda idx, _: self._flow(encode, D, x[idx], c), len(x), c.batch_size, desc="encoding",
                             progress=progress)
        check_finite(z, "latents")
        return Latents(z.numpy(), x.numpy(), c.method, float(nfe.sum()) / max(1, len(x)), time.time() - t0)

    def encode_csv(self, path, out, *, n: int = 0, resume=False, chunk_rows: int = 10_000, progress=False,
                   **options) -> dict:
        """`encode` of a table's CSV of any length (its first n rows; 0: all), `chunk_rows` rows at a time, the latents
        written to the CSV `out` as they go (`latents_table`; checkpoint.PartialCsv: resume continues an interrupted
        run). Returns {"n", "method", "nfe_per_sample" (of the rows encoded now), "seconds", "resumed_at"}."""
        c = FlowConfig.from_dict(options)
        stream = PartialCsv(out, resume, {k: v for k, v in c.to_dict().items() if k != "batch_size"})
        nfe, now, t0 = 0.0, 0, time.time()

        def carry(chunk):
            nonlocal nfe, now
            z = self.encode(chunk, **options)
            nfe, now = nfe + z.nfe_per_sample * len(z), now + len(z)
            return latents_table(z.latents, chunk.start)

        rows = stream.fill(path, chunk_rows, carry, n=n, exact=True, progress=progress, desc="encoding")
        return {"n": rows, "method": c.method, "nfe_per_sample": nfe / max(1, now), "seconds": time.time() - t0,
                "resumed_at": stream.done if resume else None}

    def decode(self, latents, *, model_space=False, progress=False, **options):
        """Latent noise (a `Latents` or an array of the model's shape) -> data in its units (model_space: the
        float tensor before decoding). options: as for `encode`."""
        self._needs_gaussian("decoding")
        self._needs_denoiser("decoding")
        c = FlowConfig.from_dict(options)
        z = latents.latents if isinstance(latents, Latents) else latents
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z, dtype=torch.float32)
        want = tuple(self.model_config.in_shape)
        check(tuple(z.shape[1:]) == want and len(z) > 0,
              f"latents have shape {tuple(z.shape)}; this run needs N x {' x '.join(map(str, want))}", "latents")
        D = unconditional(self.denoiser, self.model_config)
        x, _ = map_batches(lambda idx, _: self._flow(decode, D, z[idx], c), len(z), c.batch_size, desc="decoding",
                           progress=progress)
        check_finite(x, "decoded samples")
        return x if model_space else self.to_user(x)

    def _flow(self, fn, D, x, c: FlowConfig):
        """One batch of encode / decode: (result, network calls of each sample)."""
        m = self.model_config
        out, nfe = fn(D, x.to(self.device), m.sigma_min, m.sigma_max, **c.options)
        return out, torch.full((len(x),), float(nfe))

    # ----- restoration ---------------------------------------------------------------------------------------

    def inpaint(self, images, mask, **options) -> Restoration:
        """Fill the masked pixels. mask: box:SIZE, random:FRACTION, half[:SIDE], a mask image file, or an array
        (H x W or N x H x W; nonzero = fill). options: as for `restore`."""
        return self.restore(images, "inpaint", mask=mask, **options)

    def upscale(self, images, factor: int = 2, **options) -> Restoration:
        """Super-resolution: images at 1/factor of the model's size, brought to its size."""
        return self.restore(images, "upscale", factor=factor, **options)

    def denoise(self, images, sigma: float, **options) -> Restoration:
        """Remove Gaussian noise of std sigma ([0, 1] units): the posterior mean (method tweedie, the default) or
        posterior samples (method sample)."""
        return self.restore(images, "denoise", sigma=sigma, **options)

    def deblur(self, images, kernel: str, sigma: float = 0.0, **options) -> Restoration:
        """Undo a known blur (kernel gaussian:SIGMA or box:SIZE, periodic boundary) plus noise of std sigma."""
        return self.restore(images, "deblur", kernel=kernel, sigma=sigma, **options)

    TASKS = ("inpaint", "upscale", "denoise", "deblur")

    def restore(self, images, task: str, *, mask=None, factor: int = 2, kernel=None, sigma: float = 0.0, truth=None,
                progress=False, **options) -> Restoration:
        """Restorations of images (a path or an array, uint8 or float in [0, 1]) for a task of TASKS. options:
        `inverse.RestoreConfig` (method, n_samples, sampler, steps, grid, temperature, seed, zeta, resample, batch_size)
        and sampler knobs; the method defaults to tweedie for denoise, else repaint. truth: the clean images, for
        PSNR and SSIM."""
        check(self.kind == "image", f"{task} needs an image model; this run models {self.kind}s", "run")
        self._needs_denoiser("restoration")
        check(task in self.TASKS, f"task must be one of {', '.join(self.TASKS)}, got {task!r}", "task")
        c = RestoreConfig.from_options(**{"method": "tweedie" if task == "denoise" else "repaint", **options})
        op, y, sigma_y = self._measurement(task, read_images(images), mask, factor, kernel, sigma, c.seed)
        if truth is not None:  # read before the restoration is spent
            truth = self.codec.encode(read_images(truth))
            check(len(truth) == len(y), f"truth holds {len(truth)} images but images holds {len(y)}", "truth")
        t0 = time.time()
        x = restore(unconditional(self.denoiser, self.model_config), self.model_config, op, y, c, sigma_y=sigma_y,
                    device=self.device, progress=progress, tuned=self.grids)
        check_finite(x, "restorations")
        return self._restoration(x, op, y, sigma_y, c, time.time() - t0, truth, task)

    def _measurement(self, task, images, mask, factor, kernel, sigma, seed):
        """(operator, y in model space, sigma_y in model units) of one task."""
        size = H, W = self.codec.height, self.codec.width
        check(sigma >= 0 and math.isfinite(sigma), f"sigma must be a finite number >= 0 (image range [0, 1]), got "
              f"{sigma:g}", "sigma")
        if task == "inpaint":
            x = self.codec.encode(images)
            check(mask is not None, "inpaint needs a mask", "mask")
            op = Mask(parse_mask(mask, len(x), size, seed))
            return op, op.A(x), 2 * sigma
        if task == "upscale":
            check(isinstance(factor, int) and factor >= 2 and H % factor == 0 and W % factor == 0, f"factor {factor} "
                  f"does not fit: the model makes {W}x{H} images, so the factor must be >= 2 and divide "
                  f"{H if H == W else 'both sides'}",
                  "factor")
            small = ImageCodec(self.codec.channels, (H // factor, W // factor))
            return AvgPool(factor), small.encode(images, unclipped=True), 2 * sigma
        y = self.codec.encode(images, unclipped=True)
        if task == "denoise":
            check(sigma > 0, f"sigma must be > 0 for denoising (the noise std, image range [0, 1]), got {sigma:g}",
                  "sigma")
            return Identity(), y, 2 * sigma
        check(kernel is not None, "deblur needs a kernel (gaussian:SIGMA or box:SIZE)", "kernel")
        return parse_kernel(kernel, size), y, 2 * sigma

    def _restoration(self, x, op, y, sigma_y, c: RestoreConfig, seconds, truth, task) -> Restoration:
        k = c.n_samples
        per_input = x.view(len(y), k, *x.shape[1:])
        mean, spread = per_input.mean(1), per_input.std(1) if k > 1 else None
        rms = consistency(Measurement(op.take(torch.arange(len(x)) // k), y.repeat_interleave(k, 0), sigma_y), x)
        r = Restoration(self.codec.decode(x), len(y), k, c.method, float(rms.mean()) / 2, seconds,
                        restore_grid(c, self.grids))
        if k > 1:
            r.mean, r.std = self.codec.decode(mean), (spread / 2).permute(0, 2, 3, 1).numpy()
        if truth is not None:
            to01 = lambda t: ((t.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)  # noqa: E731
            t = to01(truth)
            r.psnr, r.ssim = float(psnr(to01(per_input[:, 0]), t).mean()), float(ssim(to01(per_input[:, 0]), t).mean())
            if k > 1:
                r.psnr_mean = float(psnr(to01(mean), t).mean())
        shown = op.pinv(y) if task == "upscale" else y  # the small image, blown up (nearest) to full size
        r.figure_rows = [shown] + [per_input[:, j] for j in range(min(k, 4))]
        if spread is not None:
            r.figure_rows += [mean, spread / spread.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) * 2 - 1]
        if truth is not None:
            r.figure_rows.append(truth)
        return r

    # ----- about the run -------------------------------------------------------------------------------------

    def export(self, out, format: str = "diffusers") -> Path:
        """Write this run in another library's format: "diffusers" (a DDIMPipeline folder that diffusers'
        DiffusionPipeline.from_pretrained loads; diffusers_io.export_diffusers). Returns the folder."""
        check(format == "diffusers", f"format must be diffusers, got {format!r}", "format")
        self._needs_gaussian("export")
        try:
            from .diffusers_io import export_diffusers
        except ImportError:
            raise DiffusekitError("exporting to diffusers needs diffusers: pip install 'diffusekit[diffusers]'") from None
        return export_diffusers(self, out)

    def describe(self) -> str:
        """Data, model, objective, steps trained and the last logged loss, one line each."""
        m, t = self.model_config, self.config.get("train", {})
        n_params = sum(p.numel() for p in self.denoiser.parameters())
        if "diffusers" in self.config:
            d = self.config["diffusers"]
            return "\n".join([f"diffusers    {self.path.resolve()} (UNet {d['unet']}, noise table of {d['scheduler']})",
                              f"model        image, shape {tuple(m.in_shape)}, {n_params / 1e6:.2f}M parameters, "
                              f"{m.parameterization} prediction, {len(m.scheduler['alpha_bars'])} timesteps, sigma in "
                              f"[{m.sigma_min:.3g}, {m.sigma_max:.3g}]"])
        _, state = load_checkpoint(self.path / "last", stems=())
        classes = f", {m.num_classes} classes: {', '.join(self.class_names)}" if m.num_classes else ", unconditional"
        lines = [
            f"run          {self.path.resolve()}",
            f"data         {t.get('data')}  ({m.kind}, shape {tuple(m.in_shape)}{classes})",
            f"model        {m.preset} token transformer, {n_params / 1e6:.2f}M parameters, {m.vocab} tokens and MASK"
            if m.kind == "text" else
            f"model        {m.preset} {'U-Net' if m.kind == 'image' else 'residual MLP'}, {n_params / 1e6:.2f}M "
            f"parameters, {m.parameterization} parameterization, sigma_data {m.sigma_data}, sigma in "
            f"[{m.sigma_min:.3g}, {m.sigma_max:.3g}]",
            "objective    " + ("masked diffusion (MDLM bound), " if m.kind == "text" else
                                  ("consistency distillation to the teacher's ODE ends, "
                                   if t.get("ct_target") == "teacher" else f"consistency tuning (ct_q {t.get('ct_q')}), ")
                                  if self.objective == "consistency" else
                                  f"noise {t.get('noise')}, weighting {t.get('weighting')}, ") + f"lr {t.get('lr')}"
            + (f" falling to 0 over the last {t['lr_decay_frac']:.0%} of the budget" if t.get("lr_decay_frac") else "")
            + f", batch {t.get('batch_size')}, {'bf16 autocast' if t.get('bf16') else 'fp32'}",
            f"trained      {state['step']} steps, {state['nimg']} images, {state['elapsed'] / 60:.1f} min",
            f"checkpoints  {', '.join(c for c in ('last', 'best') if (self.path / c).is_dir())}"
            + (f"; best: the lowest loss on {t['holdout']:.0%} of the rows held out, at step {state.get('best_step')}"
               f" (sampled by default)" if t.get("holdout") and state.get("best_step") is not None else ""),
        ]
        if "init_from" in self.config:
            src = self.config["init_from"]
            how = "distilled " if self.objective == "consistency" else "fine-tuned "
            lines.insert(4, f"{how:13}from {src['path']} (its step {src['step']})")
        log = self.path / "log.csv"
        rows = log.read_text().strip().splitlines() if log.exists() else []
        if len(rows) > 1:
            last = dict(zip(rows[0].split(","), rows[-1].split(",")))
            try:
                lines.append(f"last log     step {int(last['step'])}, loss {float(last['loss']):.4f}, "
                             f"{float(last['img_per_s']):.0f} img/s")
            except (KeyError, ValueError):  # the run is usable without its log
                lines.append(f"last log     unreadable: {log} is damaged")
        return "\n".join(lines)


def load(path, checkpoint: str = "auto", ema: bool = True, device="auto") -> Run:
    """A trained run (see Run.load)."""
    return Run.load(path, checkpoint, ema, device)


def train(data, out, *, labels=None, resume=False, progress=True, **settings) -> Run:
    """Train a model on data (a data spec or path, an array with optional labels, a pandas DataFrame) into the run
    folder `out`, or resume=True to continue the run there; returns the Run (EMA weights). settings: the fields of
    `train.TrainConfig` (minutes or steps, preset, lr, ...). In-memory data are written into the run (data.npz or
    data.csv) so that it can resume. On a resume only steps / minutes may change."""
    out = Path(out)
    with writer_lock(out, "train"):
        if resume:
            extra = sorted(set(settings) - {"steps", "minutes", "device"})
            check(not extra, f"resume continues the saved config; only steps / minutes may change (got "
                  f"{', '.join(extra)})", *extra[:1], "steps", "minutes")
            check(data is None or isinstance(data, (str, Path)), "resume reads the run's own data; give data=None",
                  "data")
            cfg = resume_config(out, **settings)
        else:
            spec = data if isinstance(data, (str, Path)) else None
            d = None if spec is not None else as_data(data, labels=labels)
            if d is not None:  # a table keeps its column names and categories in a CSV; labels need an .npz
                spec = out / ("data.csv" if d.codec.kind == "vector" and d.labels is None else "data.npz")
            cfg = TrainConfig.from_dict({"data": str(spec), "out": str(out), **settings})
            if d is not None:
                check(not (out / "config.json").exists(), f"{out} already holds a run; resume it or choose another "
                      f"out", "resume", "out")
                decoded = d.codec.decode(d.x)
                if d.codec.kind == "vector":
                    decoded = pd.DataFrame(decoded, columns=d.codec.columns)
                save_samples(spec, decoded, None if d.labels is None else d.labels.numpy())
        Trainer(cfg, resume=resume, progress=progress).run()
        run = Run.load(out, device=cfg.device)
        if run.kind == "vector" and run.objective == "diffusion" and is_main_process():
            run._tune_steps([SampleConfig.steps], **VECTOR_TUNING)  # the grid `sample` takes by default
    return run


def distill(run, out, *, ct_target: str = "teacher", progress=True, **settings) -> Run:
    """Consistency distillation: a new run in `out` that starts from `run`'s EMA weights and learns a consistency
    function, so that it samples in 1-4 network calls (2 by default). ct_target teacher: the clean end of `run`'s own
    probability-flow path (losses.TeacherPathLoss); self: consistency tuning (ECT, Geng et al. 2024) on `run`'s data
    (losses.ConsistencyLoss). settings: `train.TrainConfig` fields over the source's own and DISTILL_SETTINGS (minutes
    or steps required)."""
    src = Path(run)
    check_choice("ct_target", ct_target, CT_TARGETS)
    check(not is_diffusers_folder(src), f"{src} is a diffusers folder: distill needs a run trained by diffusekit "
          f"(its data and settings)", "run")
    config = read_run_config(src)
    saved = dict(config.get("train", {}))
    check(saved.get("objective", "diffusion") == "diffusion", f"{src} is already a consistency model", "run")
    check(config.get("codec", {}).get("kind") != "text", "distill tunes the Gaussian diffusion of images "
          "and tables to a few calls; this run models text", "run")
    chosen = set().union(*DISTILL_SETTINGS.values())
    kept = {k: v for k, v in saved.items() if k not in ("data", "out", "steps", "minutes", "init_from", "eval_every",
                                                          "sample_every", "tensorboard", *chosen)}
    return train(saved["data"], out, progress=progress,
                 **{**kept, **DISTILL_SETTINGS[ct_target], "init_from": str(src), **settings})


def resume_config(out, **budget) -> TrainConfig:
    """The saved TrainConfig of a run, with a new budget (steps / minutes) for the resumed part."""
    d = dict(read_run_config(out).get("train", {}))
    d.setdefault("holdout", 0.0)  # a run saved before held-out rows existed trained on every row
    given = {k: v for k, v in budget.items() if v is not None and k in ("steps", "minutes")}
    if given:  # a new budget replaces the saved one entirely (steps: total to reach; minutes: this invocation)
        d.update({"steps": None, "minutes": None, **given})
    if budget.get("device"):
        d["device"] = budget["device"]
    d["out"] = str(out)
    return TrainConfig.from_dict(d)
