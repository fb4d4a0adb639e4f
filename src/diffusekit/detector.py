"""AnomalyDetector: models of normal data, the scores' statistics and their conformal calibration, in one folder.

    det = dk.AnomalyDetector.fit(normal_rows, minutes=3); det.save("det/")
    result = det.score(incoming, fpr=0.01)     # a DataFrame: score, p_value, flag, z per score, top columns
    report = det.report(labelled, label_column="is_fraud")

The scores themselves are functions of the denoiser (anomaly.py); this module trains or loads the runs, keeps the fit
split's statistics, the nearest-neighbour reference and the calibration scores (detector.json, reference.safetensors),
and turns scores into tables and reports in the data's own terms.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .anomaly import (ANOMALY_STREAM, NEIGHBOURS, REPRESENTATION_LEVEL, MAX_REFERENCE, UNSEEN_PENALTY, _digest, _split, flag_rate,
                      combine, conformal_p_values, default_holdout, default_models, fit_stats, n_draws,
                      neighbour_distance, per_dim_z, raw_scores, representation)
from .checkpoint import PartialCsv, read_json, save_samples, save_tensors_atomic, write_json_atomic, writer_lock
from .config import Config, check
from .data.text import read_texts
from .data import CsvRows, Data, as_data, check_columns, csv_chunks, split_column, to_model_space
from .errors import DiffusekitError
from .evaluate import SHIPPED, WEIGHTS_DIR, features, load_classifier
from .run import Run, train
from .runtime import map_batches
from .viz import line_plot

REFERENCE_FILE = "reference.safetensors"
NEIGHBOUR_SCORES = {"representation": "neighbours", "input": "input_neighbours"}  # reference space -> score
# what detector.json must hold (fit writes them all)
INFO_KEYS = ("runs", "data", "kind", "stats", "calibration", "n_calibration", "seed", "draws", "features", "data_sha256")
STATS_KEYS = ("weights", "median", "mad", "profile_mean", "profile_precision", "profile_bins", "profile_one_sided",
              "per_dim_mean", "per_dim_std")


def _load_reference(f, device) -> dict:
    """The nearest-neighbour scores' normal samples: {"representation": [N, F], and for tables "input": [N, D]}."""
    if not f.is_file():
        raise DiffusekitError(f"the detector folder lacks {f.name} (its nearest-neighbour score's normal samples): "
                              f"copy the whole folder, or fit it again")
    try:
        ref = load_file(str(f))
    except (SafetensorError, OSError) as e:
        raise DiffusekitError(f"{f} is corrupt: {e}") from None
    if "representation" not in ref:  # every detector's reference has it
        raise DiffusekitError(f"{f} is corrupt: it holds no 'representation'")
    return {space: ref[space].float().to(device) for space in NEIGHBOUR_SCORES if space in ref}


def _run_paths(path: Path, info):
    """The folders of the runs a detector scores with (relative ones are under its folder)."""
    return [Path(p) if Path(p).is_absolute() else path / p for p in info["runs"]]


def _check_info(info):
    """Raise ValueError on a detector.json whose values are of the wrong type or disagree (a hand edit, a damaged
    file): said at load, in one line, not as a traceback from deep in scoring nor as silently wrong p-values."""
    st, n = info["stats"], info["n_calibration"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n_calibration must be a positive integer, got {n!r}")
    cal = info["calibration"]
    if not isinstance(cal, list) or len(cal) != n or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in cal):
        raise ValueError(f"calibration must be {n} finite numbers (n_calibration)")
    names = set(st["weights"])
    if not names or set(st["median"]) != names or set(st["mad"]) != names:
        raise ValueError("stats.weights, stats.median and stats.mad must name the same scores")
    if not all(isinstance(st[k][c], (int, float)) for k in ("weights", "median", "mad") for c in names):
        raise ValueError("stats.weights, stats.median and stats.mad must hold numbers")
    if not all(0 < st["mad"][c] < math.inf for c in names):
        raise ValueError("stats.mad must be positive (each score's spread)")
    d = len(st["profile_mean"])
    if len(st["profile_precision"]) != d or any(len(row) != d for row in st["profile_precision"]):
        raise ValueError(f"stats.profile_precision must be {d} x {d} (stats.profile_mean has {d} levels)")
    if st["profile_bins"] != d:
        raise ValueError(f"stats.profile_bins must be {d} (stats.profile_mean has {d} levels)")
    for k, lo, hi in (("seed", 0, 2**63 - 1), ("draws", 1, 64)):
        v = info[k]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"{k} must be an integer in {lo}-{hi}, got {v!r}")
    std = st["per_dim_std"]
    if len(st["per_dim_mean"]) != len(std) or not all(isinstance(v, (int, float)) and v > 0 for v in std):
        raise ValueError("stats.per_dim_mean and stats.per_dim_std must be of one length, the spreads positive")
    if info["kind"] == "vector" and not info.get("columns"):
        raise ValueError("a table detector must name its columns")
    ref = info.get("reference", REFERENCE_FILE)
    if not (isinstance(ref, str) and ref.startswith("reference") and ref.endswith(".safetensors") and "/" not in ref
            and "\\" not in ref):
        raise ValueError(f"reference must name a reference*.safetensors file of the detector's folder, got {ref!r}")


@dataclass
class DetectorConfig(Config):
    """How to fit a detector. Training (when no trained runs are given): `minutes` (3; shared by the models) or
    `steps` (per model), `models` (models trained with seeds seed + 1000 k and scored as one, their mean denoiser;
    3 for tables, 1 for images), `preset`, `holdout` (the fraction of the normal data kept from training to fit and
    calibrate the scores: 30%, more to hold out 40 where 30 are left to train on). features: also compare reconstructions in the
    shipped classifier's features (fashion-mnist, digits); it was trained on every class of its set, so not for
    anomalies that are classes of that set."""
    minutes: float | None = None
    steps: int | None = None
    models: int | None = None
    preset: str | None = None
    holdout: float | None = None
    features: bool = False
    seed: int = 0
    batch_size: int = 256

    def validate(self):
        check(isinstance(self.seed, int) and self.seed >= 0, f"seed must be >= 0, got {self.seed}", "seed")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1,
              f"batch_size must be at least 1, got {self.batch_size}", "batch_size")
        check(self.models is None or self.models >= 1, f"models must be at least 1, got {self.models}", "models")
        check(self.holdout is None or 0 < self.holdout < 1, f"holdout must be in (0, 1), got {self.holdout}",
              "holdout")
        m, s = self.minutes, self.steps
        check((m is None or (m >= 0 and math.isfinite(m))) and (s is None or s >= 0) and bool(s or m is None or m),
              f"give a training budget: steps N > 0 or minutes M > 0 (got steps {s}, minutes {m})", "steps", "minutes")

    def for_runs(self):
        """Given trained runs, the training settings would be ignored: said."""
        self.unused(("minutes", "steps", "preset", "holdout"), "is a training setting; with trained runs the model "
                    "is trained already (and all of the data is held out)")
        self.unused(("models",), "trains new networks; to score with an ensemble of trained ones give runs once per "
                    "run", "runs")


@dataclass
class Report:
    """How a detector's flags and scores do against labels (1 = anomaly): `summary` (AUROC, AUPRC, confusion matrix
    and realised false-positive rate at `fpr`, AUROC of each score; JSON-able), the ROC and precision-recall curves,
    and the per-item `scores` (as `AnomalyDetector.score` gives them)."""
    summary: dict
    roc: tuple  # (false-positive rates, true-positive rates)
    pr: tuple  # (recalls, precisions)
    scores: pd.DataFrame | None = None

    def figures(self) -> dict:
        """{"roc.png": image, "pr.png": image}."""
        s = self.summary
        return {"roc.png": line_plot(*self.roc, "false-positive rate", "true-positive rate",
                                     f"ROC, AUROC {s['auroc']:.3f}", diagonal=True),
                "pr.png": line_plot(*self.pr, "recall", "precision", f"precision-recall, AUPRC {s['auprc']:.3f}")}


def _feature_fn(data_spec: str, run, device):
    """The shipped classifier's features for images of its data set (Fashion-MNIST, digits), else None."""
    name = data_spec.split(":")[0]
    if run.codec.kind != "image" or name not in SHIPPED:
        return None
    model, _ = load_classifier(WEIGHTS_DIR / name)
    model.to(device)
    return lambda x: features(model, x)[0].double()


def binary_labels(labels) -> np.ndarray:
    """Labels as 0/1 ints; anything else (2, 0.4, -1) is an error, not a guess at what the user meant."""
    labels = np.asarray(labels, dtype=np.float64)
    y = np.rint(labels).astype(int)  # rint: table labels come back through float32
    bad = sorted({float(v) for v in labels[(np.abs(labels - y) > 1e-4) | ((y != 0) & (y != 1))]})
    if bad:
        raise DiffusekitError(f"labels must be 0 (normal) or 1 (anomaly); got {', '.join(f'{v:g}' for v in bad[:5])}"
                              f"{', ...' if len(bad) > 5 else ''}", "labels")
    if y.min() == y.max():
        raise DiffusekitError(f"the labels are all {'anomalies' if y[0] else 'normal'}: AUROC needs both kinds",
                              "labels")
    return y


class AnomalyDetector:
    """A fitted detector: its run (or the mean of several), the fit split's statistics and the calibration scores."""

    def __init__(self, path, run: Run, info: dict):
        self.path, self.run, self.info, self.device = Path(path), run, info, run.device
        self.features = _feature_fn(info["data"], run, self.device) if info["features"] else None
        self.reference = None  # the nearest-neighbour scores' normal samples (`_load_reference`)
        if "neighbours" in info.get("stats", {}):  # no stats yet while fitting
            self.reference = _load_reference(self.path / info.get("reference", REFERENCE_FILE), self.device)

    @property
    def stats(self):
        return self.info["stats"]

    @property
    def run_paths(self):
        return _run_paths(self.path, self.info)

    @property
    def kind(self):
        return self.info["kind"]

    def __repr__(self):
        return f"AnomalyDetector({str(self.path)!r}, {self.kind}, calibrated on {self.info['n_calibration']})"

    # ----- load, fit, save -----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path, device="auto") -> "AnomalyDetector":
        f = Path(path) / "detector.json"
        if not f.is_file():
            raise DiffusekitError(f"{path} is not a detector folder (no detector.json; make one with `anomaly fit`)")
        try:
            info = read_json(f)
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
            missing = [k for k in INFO_KEYS if k not in info]
            if not missing:
                missing = [f"stats.{k}" for k in STATS_KEYS if k not in info["stats"]]
            if not missing:
                _check_info(info)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # AttributeError: JSON that is not an object
            raise DiffusekitError(f"{f} is corrupt: {e}") from None
        if missing:
            raise DiffusekitError(f"{f} is incomplete: no {', '.join(missing)} (fit it again)")
        run = Run.ensemble(_run_paths(Path(path), info), device=device)
        dims = math.prod(run.model_config.in_shape)
        if len(info["stats"]["per_dim_std"]) != dims:
            raise DiffusekitError(f"{f} is corrupt: stats.per_dim_std must hold one spread per dimension ({dims}) "
                                  f"of its model")
        return cls(Path(path), run, info)

    @classmethod
    def fit(cls, data, out=None, *, runs=None, device="auto", progress=False, **options) -> "AnomalyDetector":
        """Train models on part of the normal data (a data spec or path, an array, a DataFrame), or reuse trained
        `runs` (one run folder or a list: scored as one, their mean denoiser; then all of the data is held out), fit the
        scores on one held-out half and calibrate on the other. out: the detector folder (None: a temporary one; keep
        it with `save`). options: `DetectorConfig`."""
        c = DetectorConfig.from_dict(options)
        spec = str(data) if isinstance(data, (str, Path)) else "data"
        data = as_data(data)
        check(data.codec.kind != "text" or data.codec.mode == "lines", "anomalies in text are lines unlike the normal "
              "ones: give lines:FILE (one sequence per line)", "data")
        out = Path(tempfile.mkdtemp(prefix="diffusekit-detector-")) if out is None else Path(out)
        if c.features and (data.codec.kind != "image" or spec.split(":")[0] not in SHIPPED):
            raise DiffusekitError(f"features needs images of a data set with a shipped classifier "
                                  f"({', '.join(SHIPPED)}); got {spec}", "features")
        if runs is not None:
            c.for_runs()
        run_paths = None if runs is None else list(runs) if isinstance(runs, (list, tuple)) else [runs]
        with contextlib.ExitStack() as locks:  # the detector's folder and the runs it reads: no writer changes them meanwhile
            locks.enter_context(writer_lock(out, "anomaly fit"))
            for folder in {Path(r).resolve() for r in run_paths or []} - {out.resolve()}:
                locks.enter_context(writer_lock(folder, "anomaly fit", reading=True))
            return cls._fit(data, spec, out, run_paths, c, device, progress)

    @classmethod
    def _fit(cls, data, spec, out, runs, c, device, progress) -> "AnomalyDetector":
        """fit's work, its folders locked; runs: the trained runs given (a list), or None to train them here."""
        if out.exists() and not out.is_dir():
            raise DiffusekitError(f"out {out} is an existing file; the detector is a folder (nothing was overwritten)",
                                  "out")
        if (out / "detector.json").exists():
            raise DiffusekitError(f"{out} already holds a detector; choose another out (nothing was overwritten)", "out")
        models = default_models(data.codec.kind) if c.models is None else c.models
        run_refs = ["run"] + [f"run{k + 1}" for k in range(1, models)]
        left = [p.name for p in (out / "normal_train.npz", out / "normal_train.csv", *(out / r for r in run_refs))
                if p.exists()]
        if runs is None and left:  # said before anything is written: a retry must not replace them
            raise DiffusekitError(f"{out} holds {', '.join(left)} from a fit that did not finish (no detector.json); "
                                  f"choose another out or remove them (nothing was overwritten)", "out")
        n = len(data.x)
        holdout = default_holdout(n) if c.holdout is None else c.holdout
        n_held = n if runs is not None else int(round(holdout * n))
        if n_held < 40:  # said before any training is spent
            raise DiffusekitError(f"too little held-out normal data: {n_held} of {n} samples; the detector needs at "
                                  f"least 40 (20 to fit the scores, 20 to calibrate; 99 calibration samples for fpr "
                                  f"0.01): give more normal data{' or a larger holdout' if n >= 70 else ''}", "holdout")
        train_idx, held = _split(n, c.seed, n_held)
        if runs is None:
            run_paths = _train_models(data, train_idx, out, run_refs, c, device, progress)
        else:
            run_paths, run_refs = runs, [str(Path(p).resolve()) for p in runs]
            if len(set(run_refs)) < len(run_refs):
                raise DiffusekitError(f"runs names one run twice: {', '.join(run_refs)}", "runs")
        run = Run.ensemble(run_paths, device=device)
        if run.codec.kind == "vector":  # before any scoring: the likelihood score needs a density in data units
            run.codec.log_det_scale()
        k = len(held) // 2  # the first half fits the scores, the second calibrates
        info = {"data": spec, "runs": run_refs, "kind": run.codec.kind,
                "shape": list(run.model_config.in_shape), "columns": getattr(run.codec, "columns", None),
                "seed": c.seed, "features": bool(c.features), "data_sha256": _digest(data.x),
                "n_train": n - len(held), "n_fit": k, "n_calibration": len(held) - k}
        det = cls(out, run, info)
        det._fit_scores(data, held, c.batch_size, progress)
        return det

    def save(self, path) -> "AnomalyDetector":
        """A copy of the detector's folder at `path` (which must not exist yet); returns the detector there."""
        path = Path(path)
        check(not path.exists(), f"{path} exists already; save a detector to a new folder", "path")
        shutil.copytree(self.path, path)
        return AnomalyDetector.load(path, self.device)

    def refit(self, data, batch_size=256, progress=False):
        """Fit the scores and calibration again on the same held-out rows of the same normal data `fit` was given,
        keeping the trained model (after a change to the scores). Writes detector.json."""
        i = self.info
        data = as_data(data)
        n, n_held = len(data.x), i["n_fit"] + i["n_calibration"]
        if n != i["n_train"] + n_held or i["data_sha256"] != _digest(data.x):
            raise DiffusekitError(f"refit needs the normal data the detector was fit on ({i['n_train'] + n_held} "
                                  f"samples); got {n} samples{' that differ' if n == i['n_train'] + n_held else ''}")
        with writer_lock(self.path, "refit"):
            self._fit_scores(data, _split(n, i["seed"], n_held)[1], batch_size, progress)

    def _fit_scores(self, data, held, batch_size, progress):
        """Score the held-out rows `held` of the normal data: statistics from the first n_fit, calibration from the
        rest; writes detector.json."""
        info, k = self.info, self.info["n_fit"]
        info["draws"] = n_draws(math.prod(self.run.model_config.in_shape))
        # a level absent from the training split is unseen here too: its block reads "no level", and it counts
        x, unseen = self.encode(Data(data.x[held], None, data.codec, data.class_names))
        raw = raw_scores(self.run, x, seed=info["seed"], batch_size=batch_size, features=self.features,
                         draws=info["draws"], progress=progress,
                         with_representation=True)  # absent for networks without one (a diffusers U-Net)
        if "representation" in raw:
            raw.update(self._fit_reference(data, held, x, raw.pop("representation"), batch_size))
        table = self.run.codec.kind != "image"  # tables and lines: one-sided profile, equal weights
        info["stats"] = fit_stats({name: v[:k] for name, v in raw.items()}, profile_one_sided=table,
                                  weights="equal" if table else "least-variance")
        if self.reference is not None:
            info["stats"]["neighbours"] = {"k": NEIGHBOURS, "level": REPRESENTATION_LEVEL,
                                           "n_reference": len(self.reference["representation"])}
        info.pop("run", None)
        info["calibration"] = sorted(self.combined({name: v[k:] for name, v in raw.items()},
                                                   [(i - k, c, v) for i, c, v in unseen if i >= k])[0].tolist())
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / "detector.json", info)  # the switch to the new reference: all or nothing
        for old in self.path.glob("reference*.safetensors"):
            if old.name != info.get("reference", REFERENCE_FILE):
                old.unlink(missing_ok=True)

    def _fit_reference(self, data, held, x_held, rep_held, batch_size):
        """Choose the nearest-neighbour score's reference, a seeded subset of at most MAX_REFERENCE of the normal
        samples that are not calibration samples (those the models trained on, and the fit half), write it, and return
        the held-out samples' distances [N] ("neighbours"; for tables also "input_neighbours", in the standardized
        columns themselves): the fit half's leave-one-out, the calibration half's to the whole reference (as new
        samples will be). The calibration samples never enter the reference: their distances are
        then exchangeable with new normal samples', and the conformal guarantee holds."""
        k, seed = self.info["n_fit"], self.info["seed"]
        rest = torch.ones(len(data.x), dtype=torch.bool)
        rest[held] = False
        train_rows = rest.nonzero().flatten()
        pick = torch.randperm(len(train_rows) + k, generator=torch.Generator().manual_seed(seed))
        pick = pick[:MAX_REFERENCE].sort().values
        train_pick, fit_pick = train_rows[pick[pick < len(train_rows)]], pick[pick >= len(train_rows)] - len(train_rows)
        parts, xt = [rep_held[fit_pick]], x_held[:0]
        if len(train_pick):
            xt = self.encode(Data(data.x[train_pick], None, data.codec, data.class_names))[0]
            parts.insert(0, map_batches(lambda idx, seeds: representation(self.run, xt[idx].to(self.device), seeds),
                                        len(xt), batch_size, seed=seed, stream=ANOMALY_STREAM + 1))
        ref = {"representation": torch.cat(parts)}
        if self.run.codec.kind == "vector":
            ref["input"] = torch.cat([xt.float(), x_held[fit_pick].float()])
        self_index = torch.full((k,), -1, dtype=torch.long)
        self_index[fit_pick] = torch.arange(len(ref["representation"]) - len(fit_pick), len(ref["representation"]))
        self.path.mkdir(parents=True, exist_ok=True)
        stored = {space: r.half() for space, r in ref.items()}
        # named by content and named in detector.json, written before it: a refit stopped between the two leaves the
        # detector on its previous reference, whole
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in stored.values())).hexdigest()[:16]
        self.info["reference"] = f"reference-{digest}.safetensors"
        save_tensors_atomic(self.path / self.info["reference"], stored)
        self.reference = {space: r.half().float().to(self.device) for space, r in ref.items()}  # scored as stored
        held_rows = {"representation": rep_held, "input": x_held}
        return {NEIGHBOUR_SCORES[space]: torch.cat([
            neighbour_distance(held_rows[space][:k].to(self.device), r, self_index=self_index),
            neighbour_distance(held_rows[space][k:].to(self.device), r)]).cpu() for space, r in self.reference.items()}

    # ----- scoring -------------------------------------------------------------------------------------------

    def encode(self, data):
        """(data in this detector's model space, its unseen categories as (row, column, value)), with a one-line error
        when they do not fit."""
        run = self.run
        what = "the detector was fit on" if "calibration" in self.info else "its model was trained on"
        unseen = []
        if run.codec.kind == "text":  # lines in the model's window; a character it never saw is scored apart (UNK)
            texts = data.codec.decode(data.x) if isinstance(data, Data) else read_texts(data, run.codec)
            return run.codec.encode(texts, unseen=unseen), unseen
        if isinstance(data, (str, Path)) and str(data).endswith(".csv") and run.codec.kind == "vector":
            data = next(csv_chunks(str(data), 1 << 62))  # typed by the model's codec, as score_csv reads it
        if isinstance(data, CsvRows):  # text cells typed by the model's codec, as the whole file would be
            check(run.codec.kind == "vector", "rows of a CSV are scored by a detector of tables", "data")
            check_columns(data.columns, run.codec.columns, what)
            return run.codec.encode(data.cells, unseen=unseen, row0=data.start + 1), unseen
        data = as_data(data, categorical=getattr(run.codec, "categories", {}))
        x = to_model_space(data, run.codec, run.model_config.in_shape, what,
                           unseen=unseen if run.codec.kind == "vector" else None)
        return x, unseen

    def combined(self, raw, unseen=()):
        """(combined score with the unseen-category penalty [N], component z-scores)."""
        s, z = combine(raw, self.stats)
        for row, _, _ in unseen:
            s[row] += UNSEEN_PENALTY
        return s, z

    def scores(self, x, unseen=(), batch_size=256, progress=False, start=0) -> dict:
        """Model-space scores: score [N], p_value [N], z (per component), per_dim_z [N, ...], and for tables
        per_column_z [N, C] (the mean over a categorical column's dimensions). unseen: (row, column, value) of
        categories the model never saw (from `encode`); each adds UNSEEN_PENALTY to its row's score. start: as for
        anomaly.raw_scores."""
        raw = raw_scores(self.run, x, seed=self.info["seed"], batch_size=batch_size, features=self.features,
                         draws=self.info["draws"], progress=progress, with_representation=self.reference is not None,
                         start=start)
        if self.reference is not None:
            rows = {"representation": raw.pop("representation"), "input": x}
            raw.update({NEIGHBOUR_SCORES[space]: neighbour_distance(rows[space].to(self.device), r).cpu()
                        for space, r in self.reference.items()})
        s, z = self.combined(raw, unseen)
        out = {"score": s, "p_value": conformal_p_values(s, torch.tensor(self.info["calibration"])), "z": z,
               "per_dim_z": per_dim_z(raw, self.stats)}
        if self.run.codec.kind == "vector":
            idx = torch.tensor(self.run.codec.column_of_dim())
            n_cols = len(self.run.codec.columns)
            total = torch.zeros(len(s), n_cols, dtype=torch.float64).index_add_(1, idx, out["per_dim_z"])
            out["per_column_z"] = total / torch.bincount(idx, minlength=n_cols)
        return out

    def score(self, data, fpr: float = 0.01, *, batch_size=256, progress=False, return_maps=False):
        """A DataFrame, one row per sample of data: score (higher: less normal), p_value (conformal), flag (p_value <=
        fpr: on normal data at most about a fraction fpr is flagged), z_<score> (each score in normal spreads), and for
        tables top_columns (the three with the largest error, in normal spreads) and unseen_categories (column=value
        absent from the normal data). return_maps: also per-pixel heat maps of images, uint8 N x H x W (255: >= 5
        normal spreads of error). An fpr below what the calibration set supports flags at the smallest rate it does
        (anomaly.flag_rate): df.attrs["fpr"] is the rate the flags use, df.attrs["fpr_note"] says why it differs."""
        rate, note = flag_rate(fpr, self.info["n_calibration"])
        check(not return_maps or self.kind == "image", "maps are drawn per pixel, for images; tables get "
              "top_columns", "maps")
        x, unseen = self.encode(data)
        r = self.scores(x, unseen, batch_size=batch_size, progress=progress, start=getattr(data, "start", 0))
        table = {"score": r["score"].numpy(), "p_value": r["p_value"].numpy(),
                 "flag": (r["p_value"] <= rate).numpy(), **{f"z_{k}": v.numpy() for k, v in r["z"].items()}}
        cols = self.info.get("columns")
        if cols:
            by_row = {}
            for i, c, v in unseen:
                by_row.setdefault(i, []).append(f"{c}={v}")
            top = torch.argsort(r["per_column_z"], dim=1, descending=True)[:, :3]
            table["top_columns"] = ["; ".join(f"{cols[j]} {float(r['per_column_z'][i, j]):+.1f}" for j in t.tolist())
                                    for i, t in enumerate(top)]
            table["unseen_categories"] = ["; ".join(by_row.get(i, [])) for i in range(len(x))]
        if self.kind == "text":  # the characters least expected (1-based positions; "end": the line's end came early or late)
            texts = self.run.codec.decode(x)
            z = r["per_dim_z"]
            top = torch.argsort(z, dim=1, descending=True)[:, :3]
            table["least_expected"] = ["; ".join(
                f"{j + 1} {repr(texts[i][j]) if j < len(texts[i]) else 'end'} {float(z[i, j]):+.1f}"
                for j in t.tolist()) for i, t in enumerate(top)]
            seen = {}
            for i, j, ch in unseen:
                seen.setdefault(i, []).append(f"{j + 1} {ch!r}")
            table["unseen_characters"] = ["; ".join(seen.get(i, [])) for i in range(len(x))]
        df = pd.DataFrame(table)
        df.index.name = "index"
        df.attrs.update(fpr=rate, fpr_note=note)
        if not return_maps:
            return df
        heat = r["per_dim_z"].mean(1).clamp(0, 5) / 5  # channel mean, 0 to 5 fit-split standard deviations
        return df, (heat * 255).round().byte().numpy()

    def score_csv(self, path, out, fpr: float = 0.01, *, resume=False, chunk_rows=10_000, batch_size=256,
                  progress=False) -> dict:
        """Score a CSV of any length into the scores file `out` as it goes (scores_table's columns), reading and
        scoring `chunk_rows` rows at a time: memory does not grow with the file, and the scores equal those of
        `score` on the whole file. Rows are appended to out + ".partial", renamed to `out` at the end; an
        interrupted run continues with resume=True. Returns {"n", "flagged", "fpr", "fpr_note", "unseen_rows",
        "unseen", "resumed_at"}."""
        check(self.kind == "vector", "score_csv streams the rows of a table; this detector scores images", "data")
        rate, note = flag_rate(fpr, self.info["n_calibration"])
        stream = PartialCsv(out, resume)
        summary = {"n": 0, "flagged": 0, "unseen_rows": 0, "unseen": 0, "fpr": rate, "fpr_note": note,
                   "resumed_at": stream.done if resume else None}
        if stream.header:
            flag = stream.header[3]
            check(flag == f"flag_at_fpr_{rate:.4g}", f"{stream.partial} was scored with flags at another fpr than "
                  f"{rate:.4g} ({flag}): resume with that fpr", "fpr")
            for part in stream.written(chunk_rows):
                _add_counts(summary, part[flag].astype(int), part.get("unseen_categories", ()))

        def score(chunk):  # under torchrun every rank scores a share of each chunk; rank 0 writes
            df = self.score(chunk, rate, batch_size=batch_size)
            _add_counts(summary, df["flag"], df.get("unseen_categories", ()))
            return scores_table(df, chunk.start)

        stream.fill(path, chunk_rows, score, progress=progress, desc="scoring")
        return summary

    def report(self, data, *, labels=None, label_column=None, fpr: float = 0.01, batch_size=256,
               progress=False) -> Report:
        """Scores of labelled data against its labels (1 = anomaly, 0 = normal): a table's `label_column`, the labels of
        a data spec (arr_1 of an .npz), or `labels` given with data."""
        from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

        flag_rate(fpr, self.info["n_calibration"])  # said before the scoring is spent
        d = as_data(data, categorical=getattr(self.run.codec, "categories", {}))
        if label_column is not None:
            d, labels = split_column(d, label_column)
        elif labels is None:
            check(d.labels is not None, "report needs labels: label_column for a table, or arr_1 (1 = anomaly) in an "
                  ".npz", "labels")
            labels = d.labels.numpy()
        y = binary_labels(labels)  # said before the scoring is spent
        check(len(y) == len(d), f"labels hold {len(y)} values for {len(d)} samples", "labels")
        df = self.score(d, fpr, batch_size=batch_size, progress=progress)
        s, flags = df["score"].to_numpy(), df["flag"].to_numpy()
        tp, fp = int((flags & (y == 1)).sum()), int((flags & (y == 0)).sum())
        fn, tn = int((~flags & (y == 1)).sum()), int((~flags & (y == 0)).sum())
        summary = {"detector": str(self.path), "data": str(data) if isinstance(data, (str, Path)) else "data",
                   "n": len(y), "n_anomalies": int(y.sum()), "auroc": float(roc_auc_score(y, s)),
                   "auprc": float(average_precision_score(y, s)), "fpr_target": df.attrs["fpr"],
                   **({"fpr_note": df.attrs["fpr_note"]} if df.attrs["fpr_note"] else {}),
                   "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
                   "realised_fpr": fp / max(1, fp + tn), "tpr": tp / max(1, tp + fn),
                   "auroc_per_component": {k[2:]: float(roc_auc_score(y, df[k])) for k in df if k.startswith("z_")}}
        f, t, _ = roc_curve(y, s)
        pr, rc, _ = precision_recall_curve(y, s)
        return Report(summary, (f, t), (rc, pr), df)


def scores_table(df, start: int = 0) -> tuple[list, list]:
    """A scores DataFrame (Detector.score) as the scores file's header and rows: index (from `start`), score,
    p_value, flag_at_fpr_<rate>, the z-scores, and for tables top_columns and unseen_categories."""
    head = ["index", "score", "p_value", f"flag_at_fpr_{df.attrs['fpr']:.4g}"] + [c for c in df if c.startswith("z_")]
    text = [c for c in ("top_columns", "unseen_categories", "least_expected", "unseen_characters") if c in df]
    rows = [[str(start + i), f"{r.score:.6g}", f"{r.p_value:.6g}", str(int(r.flag))]
            + [f"{getattr(r, c):.4g}" for c in head[4:]] + [getattr(r, c) for c in text]
            for i, r in enumerate(df.itertuples())]
    return head + text, rows


def scores_counts(flags, unseen_categories=()) -> dict:
    """Counts of a scores table's rows: n, flagged, unseen_rows (rows with a category absent from the normal data)
    and unseen (those categories; a row's unseen_categories cell lists them, "; "-separated)."""
    unseen = [u for u in unseen_categories if isinstance(u, str) and u]
    return {"n": len(flags), "flagged": int(np.sum(flags)), "unseen_rows": len(unseen),
            "unseen": sum(len(u.split("; ")) for u in unseen)}


def _add_counts(summary: dict, flags, unseen_categories):
    for k, v in scores_counts(flags, unseen_categories).items():
        summary[k] += v


def _train_models(data, train_idx, out, run_refs, c: DetectorConfig, device, progress):
    """Write the training rows and train one run per ref on them (seeds seed + 1000 k); their folders."""
    out.mkdir(parents=True, exist_ok=True)
    kind = data.codec.kind
    train_file = out / {"image": "normal_train.npz", "vector": "normal_train.csv", "text": "normal_train.txt"}[kind]
    user = data.codec.decode(data.x[train_idx])
    if kind == "vector":
        user = pd.DataFrame(user, columns=data.codec.columns)
    save_samples(train_file, user)
    if kind == "text":  # one line each, in the window of the data
        train_file = f"lines:{train_file}:{data.codec.length}"
    minutes = 3.0 if c.minutes is None else c.minutes
    for k, ref in enumerate(run_refs):
        budget = {"steps": c.steps} if c.steps else {"minutes": minutes / len(run_refs)}
        # holdout 0: the detector's own held-out rows fit its scores; its model trains on all the rest. A table's
        # model at a constant learning rate, as its scores were measured (a table's recipe lets the rate fall)
        train(str(train_file), out / ref, seed=c.seed + 1000 * k, class_cond="off", holdout=0, device=device,
              progress=progress, **({"lr_decay_frac": 0.0} if kind == "vector" else {}),
              **({"preset": c.preset} if c.preset else {}), **budget)
    return [out / ref for ref in run_refs]
