"""Sample quality, measured honestly.

Images: Frechet classifier distance (FCD) and KID in the 128-d feature space of a small classifier trained by
this project on the reference data (weights for Fashion-MNIST and digits ship in ``diffusekit/weights``; for
other data one is trained and cached), k-NN precision/recall, and the classifier's label distribution.
Vectors: energy distance and per-column Wasserstein-1 distances. Every figure comes with its sample count and,
for the distances, a bootstrap standard error over the evaluated samples. Given the training data: a memorisation
report (`memorisation`), each sample's nearest training item and the share of samples that are near-copies.

FCD is not FID: there are no Inception weights offline, and a different feature network gives numbers on a
different scale. Compare FCDs only when they come from the same classifier weights (the JSON records which).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint import atomic_path, read_json
from .config import check
from .data import Data, as_data, load_data, read_samples, to_model_space
from .data.codecs import ImageCodec
from .errors import DiffusekitError
from .metrics import (bootstrap_se, energy_distance, frechet_distance, kernel_inception_distance, marginal_distances,
                      precision_recall)
from .nets.classifier import FeatureClassifier
from .tabular import table_report
from .viz import image_grid

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = ("fashion-mnist", "digits")  # data names whose classifier ships with the package


# ---------------------------------------------------------------------------------------------------------
# The feature classifier


def train_classifier(data: Data, test: Data | None = None, seed: int = 0, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, progress: bool = False):
    """Train a FeatureClassifier on labelled images (model space). Returns (model, meta with test accuracy).
    Without a `test` set, 10% of `data` is held out to measure accuracy."""
    if data.labels is None or data.codec.kind != "image":
        raise DiffusekitError("a feature classifier needs labelled images")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = data.x, data.labels
    if test is None:
        perm = torch.randperm(len(x), generator=g)
        cut = max(1, len(x) // 10)
        test_x, test_y, x, y = x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
    else:
        test_x, test_y = test.x, test.labels
    model = FeatureClassifier(data.codec.channels, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            # light augmentation (random shifts by up to 2 pixels) so features do not hinge on exact positions
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(xb, (dy, dx), (2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {float(loss):.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(test_x[i:i + 1000]).argmax(1) for i in range(0, len(test_x), 1000)])
    acc = float((pred == test_y).float().mean())
    meta = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "test_accuracy": round(acc, 4),
            "n_train": len(x), "n_test": len(test_x), "in_channels": data.codec.channels,
            "num_classes": data.num_classes, "class_names": data.class_names, "image_size": data.codec.height,
            "train_seconds": round(time.time() - t0, 1)}
    return model, meta


def save_classifier(model, meta, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON first, weights last and renamed into place: the weights' presence marks a complete cache entry
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=2))
    with atomic_path(str(path) + ".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp)


def load_classifier(path: Path):
    try:
        meta = read_json(str(path) + ".json")
        model = FeatureClassifier(meta["in_channels"], meta["num_classes"])
        model.load_state_dict(load_file(str(path) + ".safetensors"))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise DiffusekitError(f"cannot load feature classifier {path}: {e}") from None
    return model.eval(), meta


def classifier_for(spec: str, reference: Data, cache_dir: Path, progress=False):
    """The shipped classifier for Fashion-MNIST / digits, else one trained on `reference` and cached."""
    name = spec.split(":")[0]
    if name in SHIPPED:
        path = WEIGHTS_DIR / name
        if Path(str(path) + ".safetensors").exists():
            model, meta = load_classifier(path)
            meta["weights"] = f"shipped:{name}"
            return model, meta
    path = Path(cache_dir) / f"classifier-{hashlib.sha1(spec.encode()).hexdigest()[:12]}"
    if Path(str(path) + ".safetensors").exists():
        model, meta = load_classifier(path)
    else:
        if reference.labels is None:
            raise DiffusekitError(f"{spec} has no labels: FCD needs a classifier, which needs labelled reference images")
        if progress:
            print(f"training a feature classifier on {spec} (cached in {path}.safetensors)", flush=True)
        model, meta = train_classifier(reference, progress=progress)
        save_classifier(model, meta, path)
    meta["weights"] = str(path) + ".safetensors"
    return model, meta


@torch.no_grad()
def features(model, x: torch.Tensor, batch_size: int = 500):
    """(penultimate features [N, 128], predicted labels [N]) for images in model space."""
    feats = [model.features(x[i:i + batch_size].float()) for i in range(0, len(x), batch_size)]
    f = torch.cat(feats)
    return f, model.head(f).argmax(1)


# ---------------------------------------------------------------------------------------------------------


class Evaluator:
    """Quality figures against one reference data spec; reference features are computed once."""

    def __init__(self, reference_spec: str, cache_dir=".diffusekit-cache", n_boot: int = 20, progress=False,
                 max_reference: int = 10_000):
        if n_boot < 2:
            raise DiffusekitError(f"n_boot must be at least 2 (a standard error needs two resamples), got {n_boot}",
                                  "n_boot")
        self.spec, self.n_boot = reference_spec, n_boot
        self.ref = load_data(reference_spec)
        if self.ref.codec.kind == "text":
            raise DiffusekitError("evaluate measures images and tables; text is measured by its bits per character "
                                  "(nll) and by an autoregressive model's (benchmarks/text/bpc.py)", "reference")
        self.is_image = isinstance(self.ref.codec, ImageCodec)
        g = torch.Generator().manual_seed(0)
        ref_x = self.ref.x
        if len(ref_x) > max_reference:  # a fixed seeded subset keeps every evaluation against the same set
            ref_x = ref_x[torch.randperm(len(ref_x), generator=g)[:max_reference]]
        if self.is_image:
            self.model, self.meta = classifier_for(reference_spec, self.ref, Path(cache_dir), progress)
            self.f_ref, _ = features(self.model, ref_x)
        else:
            self.ref_x = ref_x[:5000]

    def __call__(self, samples) -> dict:
        """samples: a path (.npz / image folder) or an array in user units (uint8 images, float vectors)."""
        is_path = isinstance(samples, (str, os.PathLike))
        a = read_samples(samples) if is_path else np.asarray(samples)
        n = len(a)
        if n < 2:  # a distance between distributions needs a spread on both sides
            raise DiffusekitError(f"need at least 2 samples to evaluate, got {n}")
        out = {"samples": str(samples) if is_path else "array", "reference": self.spec,
               "n_samples": int(n), "n_reference": int(len(self.f_ref) if self.is_image else len(self.ref_x))}
        notes = []  # what few samples cannot support, said rather than refused
        if n < SMALL_SAMPLE:
            notes.append(f"{'FCD' if self.is_image else 'the energy distance'} of {n} samples is biased upward (the "
                         f"bias falls as 1/n): compare runs at the same n, within their standard errors")
        if self.is_image:
            if a.ndim == 2:
                raise DiffusekitError(f"samples are vectors (shape {a.shape}) but {self.spec} holds images")
            f, labels = features(self.model, self.ref.codec.encode(a))  # encode checks size, channels, range
            f_ref = self.f_ref
            kid, kid_std = kernel_inception_distance(f, f_ref)
            prec, rec = (None, None) if n <= KNN_K else precision_recall(f_ref[:len(f)], f, k=KNN_K)  # equal sizes,
            # as in Kynkaanniemi et al.
            if prec is None:
                notes.append(f"precision and recall need more than {KNN_K} samples (k-NN with k = {KNN_K})")
            counts = torch.bincount(labels, minlength=self.meta["num_classes"]).tolist()
            out.update({
                "fcd": frechet_distance(f, f_ref), "fcd_se": bootstrap_se(frechet_distance, f, f_ref, self.n_boot),
                "kid": kid, "kid_std_over_subsets": kid_std, "precision": prec, "recall": rec,
                "label_distribution": {name: c / len(f) for name, c in zip(self.meta["class_names"], counts)},
                "classifier": {k: self.meta[k] for k in ("weights", "test_accuracy", "seed", "epochs")},
            })
        else:
            codec = self.ref.codec
            if a.ndim != 2 or a.shape[1] != len(codec.columns):
                raise DiffusekitError(f"samples have shape {a.shape}; {self.spec} has rows of {len(codec.columns)} values")
            x = codec.encode(a)[:5000]  # standardized by the reference's own statistics
            out.update({
                "energy_distance": energy_distance(x, self.ref_x),
                "energy_distance_se": bootstrap_se(energy_distance, x, self.ref_x, self.n_boot),
                **marginals(codec, codec.decode(x), codec.decode(self.ref_x)),
            })
        return {**out, "notes": notes} if notes else out

    def headline(self, result: dict) -> float:
        """The one figure to rank checkpoints by (lower is better): FCD, or energy distance for vectors."""
        return result["fcd"] if self.is_image else result["energy_distance"]


def marginals(codec, a, b) -> dict:
    """Per-column distances: Wasserstein-1 for numeric columns (their units), total variation of the level
    frequencies for categorical ones."""
    num = [j for j, is_num in enumerate(codec.numeric) if is_num]
    out = {"marginal_w1": dict(zip([codec.columns[j] for j in num],
                                   marginal_distances(a[:, num].astype(np.float64), b[:, num].astype(np.float64))))}
    if codec.categories:
        out["marginal_tv"] = {}
        for j, c in enumerate(codec.columns):
            if c in codec.categories:
                fa, fb = (np.array([np.mean(v == level) for level in codec.categories[c]]) for v in (a[:, j], b[:, j]))
                out["marginal_tv"][c] = float(0.5 * np.abs(fa - fb).sum())
    return out


KNN_K = 3  # neighbours of the k-NN precision and recall
SMALL_SAMPLE = 500  # fewer samples: the distances carry a bias of the order of their spread over n


def evaluate(samples, reference_spec: str, training=None, holdout=None, target=None, **kw) -> dict:
    """Quality figures of `samples` (path or array) against a data spec (see Evaluator); with `training` (the data
    the model was trained on, as `data.as_data` takes it) also the memorisation report's summary. A table also gets
    `tabular.table_report`'s measures (holdout: real rows not trained on, for privacy; target: a column, for
    machine-learning efficiency)."""
    ev = Evaluator(reference_spec, **kw)
    check(not ev.is_image or (holdout is None and target is None), "holdout and target are for tables", "holdout",
          "target")
    out = ev(samples)
    if not ev.is_image:
        rep = table_report(samples, ev.ref, holdout=holdout, target=target)
        notes = out.pop("notes", []) + rep.pop("notes", [])
        out.update(rep, **({"notes": notes} if notes else {}))
    if training is not None:
        out["memorisation"] = memorisation(samples, training).summary()
    return out


# ---------------------------------------------------------------------------------------------------------
# Memorisation

# a sample is a near-copy of a training item when its distance to its nearest training item is below a third of its
# distance to the second nearest (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to
# memorize", after Carlini et al. 2023's sense of a copy): near one item and not merely in a dense region
NEAR_COPY_RATIO = 1 / 3


@dataclass
class Memorisation:
    """Each sample's nearest training item (index into the de-duplicated training data), the Euclidean distances d1
    and d2 to its two nearest (in model space: pixels in [-1, 1], standardized columns), and ratio = d1 / d2."""
    nearest: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    samples: np.ndarray  # user units
    training: np.ndarray
    kind: str

    @property
    def ratio(self) -> np.ndarray:
        return self.d1 / np.maximum(self.d2, 1e-12)

    @property
    def near_copies(self) -> np.ndarray:
        return self.ratio < NEAR_COPY_RATIO

    def summary(self) -> dict:
        r = self.ratio
        return {"share_near_copies": float(self.near_copies.mean()), "near_copies": int(self.near_copies.sum()),
                "n_samples": len(r), "n_training": len(self.training),
                "test": f"d(nearest) < {NEAR_COPY_RATIO:.3g} d(second nearest), Euclidean in model space "
                        "(Yoon et al. 2023)",
                "ratio_quantiles": {q: float(np.quantile(r, float(q))) for q in ("0.01", "0.1", "0.5")},
                "median_nearest_distance": float(np.median(self.d1))}

    def figure(self, n: int = 16):
        """The n samples closest to a copy (smallest ratio), each above its nearest training image (images)."""
        check(self.kind == "image", "the picture of samples beside their nearest training items is for images",
              "neighbours")
        order = np.argsort(self.ratio)[:n]
        pairs = np.concatenate([self.samples[order], self.training[self.nearest[order]]])
        return image_grid(pairs, nrow=len(order), scale=max(1, 48 // self.samples.shape[1]))


def memorisation(samples, training, batch_size: int = 512) -> Memorisation:
    """The memorisation report of samples (a path or array in user units) against the training data (a data spec or
    path, an array or a DataFrame; duplicates are dropped, so that a repeated item is not its own second neighbour)."""
    train = as_data(training)
    x = to_model_space(as_data(samples), train.codec, train.codec.shape, "the model was trained on").flatten(1)
    t = torch.unique(train.x.flatten(1), dim=0)
    check(len(t) >= 2, f"the training data hold {len(t)} distinct item(s); nearest and second nearest need 2",
          "training")
    nearest, d1, d2 = [], [], []
    for chunk in x.double().split(batch_size):
        d = torch.cdist(chunk, t.double())
        top = d.topk(2, largest=False)
        nearest.append(top.indices[:, 0])
        d1.append(top.values[:, 0])
        d2.append(top.values[:, 1])
    unflat = t.reshape(len(t), *train.codec.shape)
    return Memorisation(torch.cat(nearest).numpy(), torch.cat(d1).numpy(), torch.cat(d2).numpy(),
                        train.codec.decode(x.reshape(len(x), *train.codec.shape)), train.codec.decode(unflat),
                        train.codec.kind)
