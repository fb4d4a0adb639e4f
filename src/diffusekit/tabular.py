"""Synthetic tables measured as the field measures them: column shapes, pair trends, detection, machine-learning
efficiency and privacy of synthetic rows against real ones.

- Column shapes (per column): the Kolmogorov-Smirnov statistic between real and synthetic values of a numeric (or
  date) column, the total variation distance between level frequencies of a categorical one; a column with missing
  cells adds the difference of its missing rates. The column-shape error is their mean (TabSyn's "column-wise
  density" error, 1 - SDMetrics' KSComplement / TVComplement).
- Pair trends (per pair of columns): half the absolute difference of Pearson correlations for two numeric columns;
  otherwise the total variation distance between the two contingency tables, a numeric column cut at the real
  data's deciles. The pair-trend error is their mean over every pair (1 - SDMetrics' CorrelationSimilarity /
  ContingencySimilarity).
- Detection (C2ST): the cross-validated AUROC of gradient-boosted trees telling real rows from synthetic ones
  (0.5: indistinguishable; trees find differences a linear detector misses).
- Machine-learning efficiency: gradient-boosted trees trained on synthetic rows and on the real training rows, both
  tested on real held-out rows: AUROC for two classes, accuracy for more, R^2 for a numeric target.
- Privacy: of the synthetic rows, the share closer to a training row than to a held-out row (equal-size sets,
  Euclidean in model space; 50% is ideal, more means copying), and exact copies of training rows against the
  held-out rows' own rate of coinciding with a training row.

SDMetrics is the library these measures come from; it is not used because its pair-trend score (0.32) leaves pairs
out of the mean by their real association and scored two samples of one distribution 0.66 on a numeric-categorical
pair, and it pins pandas below 3. The definitions above are SDMetrics' (or TabSyn's) otherwise.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .config import check
from .data import Data, as_data, check_columns
from .data.codecs import parse_times, to_numbers

DECILES = np.linspace(0.1, 0.9, 9)
NUMERIC_CLASS_MAX = 20  # a numeric target with at most this many distinct integers is a class


def table_report(samples, reference, *, holdout=None, target=None, max_rows: int = 20_000, seed: int = 0) -> dict:
    """Every measure of synthetic rows (`samples`) against real ones (`reference`, usually the training rows), each
    as data.as_data takes it. holdout: real rows not trained on (privacy; machine-learning efficiency with target,
    a column name). Up to max_rows rows of each set are used (a seeded subset)."""
    ref = as_data(reference)
    syn = _typed_like(samples, ref)
    g = np.random.default_rng(seed)
    real_rows, syn_rows = _subset(ref.codec.decode(ref.x), max_rows, g), _subset(syn, max_rows, g)
    codec = ref.codec
    out = {"n_synthetic": len(syn_rows), "n_reference": len(real_rows), **shapes_and_trends(codec, real_rows, syn_rows)}
    x_real, x_syn = (codec.encode(a, unseen=[]).numpy() for a in (real_rows, syn_rows))
    out["detection_auroc"] = detection_auroc(x_real, x_syn, seed)
    if out["detection_auroc"] is None:
        out["notes"] = [f"the detection AUROC needs {2 * DETECTION_FOLDS} rows of each set ({DETECTION_FOLDS}-fold "
                        f"cross-validation); {min(len(x_real), len(x_syn))} here"]
    if holdout is not None:
        hold_rows = _subset(_typed_like(holdout, ref), max_rows, g)
        out.update(privacy(codec, real_rows, syn_rows, hold_rows, g))
        if target is not None:
            out["ml_efficiency"] = ml_efficiency(codec, target, real_rows, syn_rows, hold_rows, seed)
    else:
        check(target is None, "machine-learning efficiency tests on real held-out rows: give holdout with target",
              "holdout")
    return out


def _typed_like(data, ref: Data) -> np.ndarray:
    """Rows of `data` in user units, typed by the reference's codec (its categorical columns stay categorical)."""
    if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == len(ref.codec.columns):
        data = pd.DataFrame(data, columns=ref.codec.columns)  # rows as `Run.sample` gives them, in the same columns
    d = as_data(data, categorical=list(ref.codec.categories))
    check_columns(d.codec.columns, ref.codec.columns, "the reference has")  # values are checked when encoded
    return d.codec.decode(d.x)


def _subset(rows: np.ndarray, n: int, g) -> np.ndarray:
    return rows if len(rows) <= n else rows[np.sort(g.choice(len(rows), n, replace=False))]


def _column_values(codec, rows, j):
    """(float values with NaN for missing, None) of a numeric or date column; (None, level texts) of a categorical."""
    c = codec.columns[j]
    if c in codec.categories:
        return None, np.array(["" if v is None else str(v) for v in rows[:, j]], dtype=object)
    if c in codec.dates:
        return parse_times(rows[:, j], codec.dates[c]["unit"])[0], None
    return to_numbers(rows[:, j]), None


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def total_variation(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance between the frequencies of the values (or rows of values) of a and b."""
    levels, inverse = np.unique(np.concatenate([a, b]), return_inverse=True, axis=0 if a.ndim > 1 else None)
    fa = np.bincount(inverse[:len(a)].ravel(), minlength=len(levels)) / len(a)
    fb = np.bincount(inverse[len(a):].ravel(), minlength=len(levels)) / len(b)
    return float(0.5 * np.abs(fa - fb).sum())


def shapes_and_trends(codec, real_rows, syn_rows) -> dict:
    cols = codec.columns
    real = [_column_values(codec, real_rows, j) for j in range(len(cols))]
    syn = [_column_values(codec, syn_rows, j) for j in range(len(cols))]
    shapes = {}
    for c, (rn, rc), (sn, sc) in zip(cols, real, syn):
        if rn is None:
            shapes[c] = total_variation(rc, sc)
            continue
        rp, sp = rn[~np.isnan(rn)], sn[~np.isnan(sn)]
        gap = abs(np.isnan(rn).mean() - np.isnan(sn).mean())
        shapes[c] = gap + (ks_statistic(rp, sp) if len(rp) and len(sp) else 1.0)

    def discrete(k, values):  # a column as integer codes for a contingency table: numbers cut at the real deciles
        rn, (num, cat) = real[k][0], values
        if rn is None:
            return cat
        cuts = np.unique(np.nanquantile(rn, DECILES)) if not np.isnan(rn).all() else np.zeros(0)
        return np.where(np.isnan(num), -1, np.searchsorted(cuts, np.nan_to_num(num), "right"))

    trends = {}
    for i in range(len(cols)):
        for k in range(i + 1, len(cols)):
            if real[i][0] is not None and real[k][0] is not None:
                trends[f"{cols[i]} | {cols[k]}"] = abs(_pearson(real[i][0], real[k][0]) -
                                                       _pearson(syn[i][0], syn[k][0])) / 2
            else:
                pair = lambda vals: np.stack([discrete(i, vals[i]).astype(str), discrete(k, vals[k]).astype(str)], 1)  # noqa: E731
                trends[f"{cols[i]} | {cols[k]}"] = total_variation(pair(real), pair(syn))
    return {"column_shape_error": float(np.mean(list(shapes.values()))),
            "pair_trend_error": float(np.mean(list(trends.values()))) if trends else 0.0,
            "column_shapes": shapes, "pair_trends": trends}


def _pearson(a, b) -> float:
    both = ~(np.isnan(a) | np.isnan(b))
    a, b = a[both], b[both]
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _trees(classify: bool, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return (HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor)(random_state=seed)


DETECTION_FOLDS = 5


def detection_auroc(x_real: np.ndarray, x_syn: np.ndarray, seed: int = 0, folds: int = DETECTION_FOLDS) -> float | None:
    """C2ST: cross-validated AUROC of boosted trees telling real (0) from synthetic (1) rows, equal counts; None with
    fewer than 2 rows of each set per fold."""
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(seed)
    n = min(len(x_real), len(x_syn))
    if n < 2 * folds:
        return None
    x = np.concatenate([x_real[g.permutation(len(x_real))[:n]], x_syn[g.permutation(len(x_syn))[:n]]])
    y = np.r_[np.zeros(n), np.ones(n)]
    fold = g.permutation(2 * n) % folds
    scores = np.empty(2 * n)
    for f in range(folds):
        model = _trees(True, seed).fit(x[fold != f], y[fold != f])
        scores[fold == f] = model.predict_proba(x[fold == f])[:, 1]
    return float(roc_auc_score(y, scores))


def ml_efficiency(codec, target: str, real_rows, syn_rows, hold_rows, seed: int = 0) -> dict:
    """Boosted trees trained on synthetic rows and on real training rows, tested on real held-out rows. The target is
    a class when categorical or when it holds at most NUMERIC_CLASS_MAX distinct integers (AUROC for two classes, else
    accuracy), else a number (R^2)."""
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    check(target in codec.columns, f"no column {target!r} for the target; the columns are {', '.join(codec.columns)}",
          "target")
    j = codec.columns.index(target)
    rest = codec.without(target)
    keep = [k for k in range(len(codec.columns)) if k != j]
    feats = lambda rows: rest.encode(rows[:, keep], unseen=[]).numpy()  # noqa: E731
    values = to_numbers(real_rows[:, j]) if target not in codec.categories else None
    is_class = values is None or (codec.decimals.get(target) == 0 and len(np.unique(values)) <= NUMERIC_CLASS_MAX)
    if is_class:
        text = lambda rows: np.array([str(v) if values is None else repr(float(v)) for v in rows[:, j]])  # noqa: E731
        levels = {v: k for k, v in enumerate(sorted(set(text(real_rows))))}
        labels = lambda rows: np.array([levels.get(v, -1) for v in text(rows)])  # noqa: E731
        measure = "auroc" if len(levels) == 2 else "accuracy"
    else:
        labels, measure = (lambda rows: to_numbers(rows[:, j])), "r2"
    y_test, x_test = labels(hold_rows), feats(hold_rows)
    result = {"target": target, "measure": measure, "n_test": int(len(hold_rows))}
    for name, rows in (("real", real_rows), ("synthetic", syn_rows)):
        y = labels(rows)
        ok = ~np.isnan(y) if measure == "r2" else np.ones(len(y), bool)
        model = _trees(is_class, seed).fit(feats(rows)[ok], y[ok])
        if measure == "auroc":  # the probability of level 1 (AUROC is the same for either level)
            p = model.predict_proba(x_test)[:, list(model.classes_).index(1)] if 1 in model.classes_ else \
                np.zeros(len(x_test))
            result[name] = float(roc_auc_score(y_test == 1, p))
        elif measure == "accuracy":
            result[name] = float(accuracy_score(y_test, model.predict(x_test)))
        else:
            test_ok = ~np.isnan(y_test)
            result[name] = float(r2_score(y_test[test_ok], model.predict(x_test[test_ok])))
    result["gap"] = result["real"] - result["synthetic"]
    return result


def privacy(codec, train_rows, syn_rows, hold_rows, g) -> dict:
    """DCR share (closer to a training row than to a held-out row; equal-size sets) and exact copies."""
    n = min(len(train_rows), len(hold_rows))
    t, h = train_rows[g.permutation(len(train_rows))[:n]], hold_rows[g.permutation(len(hold_rows))[:n]]
    xt, xh, xs = (torch.as_tensor(codec.encode(a, unseen=[])).double() for a in (t, h, syn_rows))
    d_train, d_hold = _nearest(xs, xt), _nearest(xs, xh)
    seen = {tuple(map(str, r)) for r in train_rows}
    copies = sum(tuple(map(str, r)) in seen for r in syn_rows)
    hold_copies = sum(tuple(map(str, r)) in seen for r in hold_rows)
    return {"dcr_share_closer_to_training": float((d_train < d_hold).mean() + 0.5 * (d_train == d_hold).mean()),
            "exact_copies_of_training": int(copies), "exact_copies_share": copies / len(syn_rows),
            "holdout_copies_share": hold_copies / len(hold_rows)}


def _nearest(x: torch.Tensor, ref: torch.Tensor, batch: int = 1024) -> np.ndarray:
    return torch.cat([torch.cdist(chunk, ref).min(1).values for chunk in x.split(batch)]).numpy()
