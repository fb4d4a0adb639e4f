"""Codecs map model space (images NCHW in [-1, 1]; standardized vectors) to user space and back.

A codec is saved with the checkpoint, so `sample` writes real pixels or real rows without repeating flags.
"""
from __future__ import annotations

import copy
import re

import numpy as np
import torch

from ..errors import DiffusekitError, check_choice


class ImageCodec:
    kind = "image"
    target = None  # images take their classes from folders or arr_1, never from a column

    def __init__(self, channels: int, size):
        """size: an int (square) or (height, width)."""
        h, w = (size, size) if isinstance(size, (int, np.integer)) else size
        self.channels, self.height, self.width = int(channels), int(h), int(w)

    @property
    def shape(self):
        return (self.channels, self.height, self.width)

    @property
    def size_text(self) -> str:
        return f"{self.width}x{self.height}"

    def decode(self, x: torch.Tensor) -> np.ndarray:
        """Model space -> uint8 NHWC."""
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()

    def encode(self, a, unclipped: bool = False) -> torch.Tensor:
        """uint8 (0-255) or float in [0, 1], NHWC / NHW / NCHW -> model space NCHW. unclipped: floats may leave
        [0, 1] (a noisy measurement keeps its noise)."""
        a = np.asarray(a)
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise DiffusekitError(f"expected images of shape N x H x W x C, got shape {a.shape}")
        if a.shape[-1] not in (1, 3) and a.shape[1] in (1, 3):
            a = a.transpose(0, 2, 3, 1)
        if a.shape[1:] != (self.height, self.width, self.channels):
            raise DiffusekitError(f"images are {a.shape[2]}x{a.shape[1]} (width x height) with {a.shape[3]} channel(s);"
                                  f" the model expects {self.size_text} with {self.channels} channel(s)")
        if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
            raise DiffusekitError(f"images must be uint8 (0-255) or float in [0, 1], got {a.dtype}")
        x = torch.from_numpy(a.astype(np.float32))
        if a.dtype == np.uint8:
            x = x / 255.0
        elif not torch.isfinite(x).all():
            raise DiffusekitError("images contain NaN or infinite values")
        elif not unclipped and (x.min() < 0 or x.max() > 1):
            raise DiffusekitError(f"float images must be in [0, 1], got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]")
        return (x * 2 - 1).permute(0, 3, 1, 2).contiguous()

    def to_dict(self):
        size = self.height if self.height == self.width else [self.height, self.width]
        return {"kind": "image", "channels": self.channels, "size": size}


MISSING = ("", "na", "nan", "null", "none", "<na>")
MAX_DECIMALS = 6  # a numeric column written with more decimals is not rounded on decoding
ONE_HOT_MAX = 64  # a categorical column with more levels is coded in analog bits
NUMERIC_MAPS = ("standard", "quantile")
QUANTILE_BOUND = 1e-7  # the quantile map's levels stay within +-Phi^-1(1 - 1e-7) = +-5.2 (scikit-learn's bound)
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:([T ])\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")


def is_missing(v) -> bool:
    """An empty cell: None, NaN, or text such as "", "NA", "null"."""
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip().lower() in MISSING
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    return str(v) == "<NA>"  # pandas' NA


def to_numbers(col) -> np.ndarray | None:
    """A column's cells as float64, NaN where missing; None when a present cell is not a number."""
    col = np.asarray(col)
    try:
        return col.astype(np.float64)  # the common case, fast: every cell a number
    except (TypeError, ValueError):
        pass
    out = np.full(len(col), np.nan)
    for i, v in enumerate(col):
        if not is_missing(v):
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                return None
    return out


def parse_times(col, unit=None):
    """(values in days ("D") or seconds ("s") since 1970, NaN where missing; unit; separator of date and time) of a
    column of ISO 8601 dates or date-times, or None when a present cell is not one. unit None: "D" when every cell
    is a date alone. Fractions of a second are dropped."""
    cells = [None if is_missing(v) else str(v).strip() for v in col]
    matches = [None if s is None else _ISO_TIME.fullmatch(s) for s in cells]
    if any(s is not None and m is None for s, m in zip(cells, matches)):
        return None
    seps = {m.group(1) for m in matches if m is not None and m.group(1)}
    unit = unit or ("s" if seps else "D")
    out = np.full(len(cells), np.nan)
    try:
        for i, s in enumerate(cells):
            if s is not None:
                out[i] = np.datetime64(s.replace(" ", "T")).astype(f"datetime64[{unit}]").astype(np.int64)
    except ValueError:  # not a real date (2024-02-30)
        return None
    return out, unit, (seps.pop() if len(seps) == 1 else "T")


class VectorCodec:
    """A table. Numeric columns are standardized, (value - mean) / std, one dimension each; on decoding, a column whose
    training values had at most MAX_DECIMALS decimals (0: integers) is rounded to as many, and every numeric column is
    clipped to its training range. A column
    of ISO 8601 dates (or date-times) is numeric in days (seconds) since 1970 and decodes to the same form. A numeric
    column with missing cells has one more dimension before its value: +1 missing, -1 present (a missing value is
    imputed by the mean, 0); it decodes to NaN. A categorical column of K levels (a missing cell is the level "") is
    one-hot over K dimensions, +1 for its level and -1 elsewhere (unit scale, like a standardized column), decoded as
    the largest; above ONE_HOT_MAX levels, analog bits (Chen et al. 2022): the level's index in binary over
    ceil(log2 K) dimensions of +-1, decoded as the nearest valid code. User space: a float array when every column is
    a plain number, else an object array of floats and texts.
    Quantile map (`fit(numeric="quantile")`, TabDDPM's preprocessing): each numeric column goes through its training
    values' empirical distribution function to a standard normal, z = Phi^-1(F(v)), F interpolated linearly between
    `quantile_count` quantiles, and back through their quantile function. A value many rows share (a spike: 40 hours a
    week, 0 for none) maps to the middle of its stretch of F, and every z of that stretch decodes to it exactly: the
    model need not learn a point mass, which a continuous model spreads over nearby values."""

    kind = "vector"

    def __init__(self, mean, std, columns=None, categories=None, decimals=None, ranges=None, dates=None, missing=(),
                 bits=(), target=None, quantiles=None):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.columns = list(columns) if columns is not None else [f"x{i}" for i in range(len(self.mean))]
        self.categories = {c: [str(v) for v in levels] for c, levels in (categories or {}).items()}
        self.decimals = {c: int(k) for c, k in (decimals or {}).items()}
        self.missing, self.bits = set(missing), set(bits)
        self.ranges = {c: (float(lo), float(hi)) for c, (lo, hi) in (ranges or {}).items()}
        self.dates = {c: dict(d) for c, d in (dates or {}).items()}  # column -> {"unit": "D" or "s", "sep": "T"}
        # column -> its training values' quantiles at evenly spaced levels 0..1 (the quantile map)
        self.quantiles = {c: np.asarray(q, dtype=np.float64) for c, q in (quantiles or {}).items()}
        # the class-label column kept out of the features (`without`): {"column", "index", "weights" of its levels}
        self.target = dict(target) if target else None
        # the model dimensions of each column, in column order
        self._codes = {c: _bit_codes(len(self.categories[c])) for c in self.bits}
        self.slices, d = [], 0
        for c in self.columns:
            k = self._width(c)
            self.slices.append(slice(d, d + k))
            d += k
        self._lookup = {c: _level_lookup(levels) for c, levels in self.categories.items()}

    def _width(self, c) -> int:
        if c in self.bits:
            return self._codes[c].shape[1]
        if c in self.categories:
            return len(self.categories[c])
        return 2 if c in self.missing else 1

    @classmethod
    def fit(cls, values, columns=None, categorical=(), numeric: str = "standard"):
        """values: rows of numbers, or (object array) rows of cells: numbers, ISO dates, texts (a column not all
        numbers or all dates is categorical) and missing cells; columns named in `categorical` are categorical
        whatever their values look like. numeric: how numeric columns enter model space, "standard" or "quantile"
        (the class docstring)."""
        check_choice("numeric", numeric, NUMERIC_MAPS)
        values = np.asarray(values)
        columns = list(columns) if columns is not None else [f"x{i}" for i in range(values.shape[1])]
        mean, std = np.zeros(len(columns)), np.ones(len(columns))
        categories, decimals, ranges, dates, missing, quantiles = {}, {}, {}, {}, [], {}
        for j, c in enumerate(columns):
            col = values[:, j]
            nums, times = (None, None) if c in categorical else (to_numbers(col), None)
            if nums is None and c not in categorical and (times := parse_times(col)) is not None:
                nums = times[0]
            if nums is None or np.isnan(nums).all():
                categories[c] = sorted({"" if is_missing(v) else str(v).strip() for v in col})
                continue
            if times is not None:
                dates[c] = {"unit": times[1], "sep": times[2]}
            present = nums[~np.isnan(nums)]
            if len(present) < len(nums):
                missing.append(c)
            if np.isfinite(present).all():  # infinite values are refused by encode
                with np.errstate(over="ignore"):
                    mean[j], s = present.mean(), present.std()
                if not (np.isfinite(mean[j]) and np.isfinite(s)):  # values near 1e308: in units of the largest
                    top = float(np.abs(present).max())
                    mean[j], s = (present / top).mean() * top, (present / top).std() * top
                # a column constant up to rounding (float32 round trips) is constant: dividing by its 1e-25 spread
                # would blow every later value up
                std[j] = s if s > 1e-9 * max(1.0, float(np.abs(present).max())) else 1.0
                ranges[c] = (float(present.min()), float(present.max()))
                k = _decimals(present)
                if k is not None:
                    decimals[c] = k
                if numeric == "quantile":
                    quantiles[c] = np.quantile(present, np.linspace(0, 1, quantile_count(len(present))))
        bits = [c for c, levels in categories.items() if len(levels) > ONE_HOT_MAX]
        return cls(mean, std, columns, categories, decimals, ranges, dates, missing, bits, quantiles=quantiles)

    @property
    def shape(self):
        return (self.slices[-1].stop if self.slices else 0,)

    @property
    def numeric(self) -> list[bool]:
        """Per column: holds numbers (dates as days or seconds since 1970)."""
        return [c not in self.categories for c in self.columns]

    @property
    def plain(self) -> bool:
        """Every column a number (no categories, no dates): user space is a float array."""
        return not self.categories and not self.dates

    def decode(self, x: torch.Tensor) -> np.ndarray:
        # float64 values: a float32 one holds 7 digits, so a column like a unix time (1.7e9, spread 10) would lose
        # its spread on the way back (the detector and `encode` re-encode decoded rows)
        x = x.double().cpu().numpy()
        out = np.empty((len(x), len(self.columns)), dtype=np.float64 if self.plain else object)
        for j, (c, sl) in enumerate(zip(self.columns, self.slices)):
            if c in self.categories:
                out[:, j] = np.asarray(self.categories[c], dtype=object)[self.level_index(c, x[:, sl])]
                continue
            v = (from_normal(x[:, sl.stop - 1], self.quantiles[c]) if c in self.quantiles
                 else x[:, sl.stop - 1] * self.std[j] + self.mean[j])
            if c in self.decimals:
                v = np.round(v, self.decimals[c])
            if c in self.ranges:
                v = np.clip(v, *self.ranges[c])
            if c in self.missing:
                v = np.where(x[:, sl.start] > 0, np.nan, v)
            out[:, j] = v if c not in self.dates else self._times_text(v, self.dates[c])
        return out

    def level_index(self, c: str, block: np.ndarray) -> np.ndarray:
        """The level of categorical column c in each row of its model-space block [N, width]."""
        return _nearest_code(block, self._codes[c]) if c in self.bits else block.argmax(1)

    @staticmethod
    def _times_text(v, fmt):
        text = np.empty(len(v), dtype=object)
        for i, t in enumerate(v):
            text[i] = "" if np.isnan(t) else str(np.datetime64(int(round(t)), fmt["unit"])).replace("T", fmt["sep"])
        return text

    def encode(self, a, unseen: list | None = None, row0: int = 1) -> torch.Tensor:
        """User rows -> model space. A category the codec has not seen is an error, unless `unseen` is a list:
        then its block is all -1 (no level) and (row, column, value) is appended to the list. row0: the number the
        messages give the first row (rows read in parts)."""
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != len(self.columns):
            raise DiffusekitError(f"expected rows of {len(self.columns)} values, got shape {a.shape}")
        x = np.empty((len(a), self.shape[0]))
        for j, (c, sl) in enumerate(zip(self.columns, self.slices)):
            if c in self.categories:
                x[:, sl] = self._encode_levels(c, a[:, j], unseen, row0)
                continue
            if c in self.dates:
                parsed = parse_times(a[:, j], self.dates[c]["unit"])
                col = parsed[0] if parsed else None
                if col is None:
                    raise DiffusekitError(f"column {c!r} holds dates (YYYY-MM-DD[THH:MM[:SS]]) in the model but a "
                                          "value here is not one")
            else:
                col = to_numbers(a[:, j])
                if col is None:
                    bad = next((i for i, v in enumerate(a[:, j]) if to_numbers(np.array([v], dtype=object)) is None), 0)
                    raise DiffusekitError(f"column {c!r} is numeric in the model but holds non-numeric values ("
                                          f"{a[bad, j]!r}, row {bad + row0})")
            gone = np.isnan(col)
            if gone.any() and c not in self.missing:
                raise DiffusekitError(f"column {c!r} has missing values (row {int(gone.argmax()) + row0}) but had none in "
                                      "the training data")
            if np.isinf(col).any():
                raise DiffusekitError(f"data contain infinite values (column {c!r})")
            if c in self.missing:
                x[:, sl.start] = np.where(gone, 1.0, -1.0)
            z = to_normal(col, self.quantiles[c]) if c in self.quantiles else (col - self.mean[j]) / self.std[j]
            x[:, sl.stop - 1] = np.where(gone, 0.0, z)
        return torch.from_numpy(x).float()

    def _encode_levels(self, c, cells, unseen, row0=1):
        block = -np.ones((len(cells), self._width(c)))
        for i, v in enumerate(cells):
            k = self._lookup[c]("" if is_missing(v) else v)
            if k is not None:
                if c in self.bits:
                    block[i] = self._codes[c][k]
                else:
                    block[i, k] = 1.0
            elif unseen is not None:
                unseen.append((i, c, v))
            else:
                levels = self.categories[c]
                raise DiffusekitError(f"column {c!r}: category {v!r} (row {i + row0}) was not in the training data "
                                      f"(levels: {', '.join(levels[:10])}{', ...' if len(levels) > 10 else ''})")
        return block

    def log_det_scale(self) -> float:
        """log |d model / d data| per row: add to a model-space log-density to get one in data units (nats).
        One-hot, bit and missing-indicator dimensions have no data units: their density stays in model units."""
        if self.quantiles:
            raise DiffusekitError("likelihoods in data units need a table trained with numeric standard: the quantile "
                                  "map (numeric quantile) gives a value many rows share a point mass, not a density")
        return float(-np.log(self.std[self.numeric]).sum())

    def column_of_dim(self) -> list[int]:
        """The column index of each model dimension."""
        return [j for j, sl in enumerate(self.slices) for _ in range(sl.stop - sl.start)]

    def without(self, name: str, target=None) -> "VectorCodec":
        """This codec less column `name` (target: the class-label record to keep, see __init__)."""
        j = self.columns.index(name)
        d = copy.deepcopy(self.to_dict())  # to_dict shares this codec's dicts
        for key in ("mean", "std", "columns"):
            d[key] = d[key][:j] + d[key][j + 1:]
        for key in ("categories", "decimals", "ranges", "dates", "quantiles"):
            d.get(key, {}).pop(name, None)
        for key in ("missing", "bits"):
            d[key] = [c for c in d.get(key, ()) if c != name]
        d["target"] = target
        return codec_from_dict(d)

    def split(self, x: torch.Tensor, name: str, target=None) -> tuple[torch.Tensor, "VectorCodec"]:
        """Model-space rows x without column `name`'s dimensions, and the codec for them (`without`)."""
        sl = self.slices[self.columns.index(name)]
        return torch.cat([x[:, :sl.start], x[:, sl.stop:]], 1), self.without(name, target)

    def to_dict(self):
        d = {"kind": "vector", "mean": self.mean.tolist(), "std": self.std.tolist(), "columns": self.columns}
        for name, value in (("categories", self.categories), ("decimals", self.decimals),
                            ("ranges", {c: list(r) for c, r in self.ranges.items()}), ("dates", self.dates),
                            ("missing", sorted(self.missing)), ("bits", sorted(self.bits)), ("target", self.target),
                            ("quantiles", {c: q.tolist() for c, q in self.quantiles.items()})):
            if value:
                d[name] = value
        return d


def quantile_count(n: int) -> int:
    """Quantiles a quantile map keeps of n values: one per 30 values, 10 to 1,000 (TabDDPM's choice)."""
    return max(min(n // 30, 1000), 10)


def to_normal(v: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Phi^-1(F(v)), F interpolating linearly between quantiles q at levels linspace(0, 1); a value equal to
    quantiles q[a..b] takes the middle level (p_a + p_b) / 2, and the levels are kept within QUANTILE_BOUND of 0 and 1
    (a value outside the training range goes to the nearest end). NaN stays NaN; a constant column maps to 0."""
    p = np.linspace(0, 1, len(q))
    if q[0] == q[-1]:
        return np.where(np.isnan(v), np.nan, 0.0)
    u = np.interp(v, q, p)  # between quantiles; at a run of equal quantiles, numpy gives the run's last level
    a, b = np.searchsorted(q, v, "left"), np.searchsorted(q, v, "right")
    u = np.where(b > a, (p[np.minimum(a, len(q) - 1)] + p[np.maximum(b - 1, 0)]) / 2, u)
    u = np.clip(u, QUANTILE_BOUND, 1 - QUANTILE_BOUND)
    return torch.special.ndtri(torch.from_numpy(np.asarray(u, dtype=np.float64))).numpy()


def from_normal(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The quantile map's inverse: the quantile function at Phi(z), interpolated linearly between quantiles q."""
    u = torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()
    u = np.where(u <= 2 * QUANTILE_BOUND, 0.0, np.where(u >= 1 - 2 * QUANTILE_BOUND, 1.0, u))  # the ends, exactly
    return np.interp(u, np.linspace(0, 1, len(q)), q)


def _decimals(values: np.ndarray) -> int | None:
    """The fewest decimals (up to MAX_DECIMALS) that write every value exactly, or None."""
    for k in range(MAX_DECIMALS + 1):
        if (np.abs(np.round(values, k) - values) <= 1e-12 * np.maximum(1.0, np.abs(values))).all():
            return k
    return None


def _bit_codes(k: int) -> np.ndarray:
    """The +-1 binary code of each of k levels, [k, ceil(log2 k)] (at least one bit)."""
    n_bits = max(1, int(np.ceil(np.log2(k))))
    return np.where((np.arange(k)[:, None] >> np.arange(n_bits)) & 1, 1.0, -1.0)


def _nearest_code(block: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The level of each row of analog bits: its signs read in binary, or, where that is no level, the nearest code
    (largest inner product: every code has the same norm)."""
    k = ((block > 0) * (1 << np.arange(block.shape[1]))).sum(1)
    for i in np.flatnonzero(k >= len(codes)):
        k[i] = int((codes @ block[i]).argmax())
    return k


def _level_lookup(levels):
    """value -> level index: by its text, or by number for numeric-looking levels (3.0 finds "3")."""
    by_text = {v: k for k, v in enumerate(levels)}
    by_number = {}
    for k, v in enumerate(levels):
        try:
            by_number.setdefault(float(v), k)
        except ValueError:
            pass

    def find(v):
        k = by_text.get(str(v).strip())
        if k is None and not isinstance(v, str):
            try:
                k = by_number.get(float(v))
            except (TypeError, ValueError):
                pass
        return k

    return find


def codec_from_dict(d: dict):
    if d.get("kind") == "image":
        return ImageCodec(d["channels"], d["size"])
    if d.get("kind") == "vector":
        return VectorCodec(d["mean"], d["std"], d.get("columns"), d.get("categories"), d.get("decimals"),
                           d.get("ranges"), d.get("dates"), d.get("missing", ()), d.get("bits", ()),
                           d.get("target"), d.get("quantiles"))
    if d.get("kind") == "text":
        from .text import TextCodec

        return TextCodec.from_dict(d)
    raise DiffusekitError(f"unknown codec {d!r}")
