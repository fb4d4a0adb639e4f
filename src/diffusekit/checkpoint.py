"""Checkpoints are directories of safetensors + JSON, written under a temporary name and renamed into place,
so a crash never leaves a half-written checkpoint. No pickles anywhere.

Run directory: ``config.json`` (train + model config, codec), ``last/`` and ``best/`` checkpoints (each
``model.safetensors``, ``ema.safetensors``, ``optimizer.safetensors``, ``state.json``), ``log.csv``, ``samples/``.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .data import csv_chunks
from .errors import DiffusekitError, check
from .runtime import is_main_process, on_main, release_memory, steady_heap

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, writers are not serialised
    fcntl = None

LOCK_FILE = ".lock"


@contextmanager
def atomic_path(path, suffix=""):
    """A temporary name beside `path` to write to; renamed onto `path` when the block succeeds and removed when it
    fails: readers never see a half-written file, and a failed write leaves the previous file as it was. suffix:
    the extension a writer insists on (np.savez appends ".npz")."""
    if os.path.isdir(path):
        raise DiffusekitError(f"{path} is a folder; give a file name to write")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    remove_dead_writers(os.path.dirname(os.path.abspath(path)), glob.escape(os.path.basename(path)))
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise


@contextmanager
def writer_lock(folder, what: str, *, reading: bool = False):
    """One writer at a time in `folder` (a run, a detector): an exclusive lock on folder/.lock for the block; another
    process that holds it is named in a one-line refusal. The OS drops the lock when its process dies, so a crash never
    leaves it stuck. Under torchrun only rank 0 locks (the ranks write one run together). A folder made here that holds
    only the lock afterwards (the work was refused before writing) is removed. reading: a folder the block only reads
    but must not see change (a run a detector is fit on): locked where it exists and can be written, else left as is."""
    folder = Path(folder)
    if fcntl is None or int(os.environ.get("RANK", "0")) != 0 or \
            (reading and not (folder.is_dir() and os.access(folder, os.W_OK))):
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise DiffusekitError(f"{folder} is an existing file, not a folder (nothing was written)")
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / LOCK_FILE, "a+")
    except OSError as e:
        raise DiffusekitError(f"cannot write in {folder}: {e.strerror or e} (nothing was written)") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise DiffusekitError(f"{folder} is being written by {holder}; one writer at a time: wait for it to finish "
                                  f"or choose another folder (nothing was changed)") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({what})\n")
        f.flush()
        try:
            yield
        finally:
            if made and os.listdir(folder) == [LOCK_FILE]:
                os.remove(folder / LOCK_FILE)
                folder.rmdir()


def remove_dead_writers(folder, name: str = "*"):
    """What writers killed mid-write left in `folder`: the temporary files of atomic_path and folders of
    save_checkpoint (NAME.tmp-PID...) whose process is gone."""
    for p in Path(folder).glob(f"{name}.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[1].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def write_text_atomic(path, text: str):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_npz_atomic(path, **arrays):
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)


def save_image_atomic(image, path):
    """A PIL image, its format from the extension of `path`."""
    with atomic_path(path, os.path.splitext(str(path))[1]) as tmp:
        image.save(tmp)


def write_csv_atomic(path, header, rows, exact=False):
    """A CSV (header row unless empty; floats as %.6g, or with exact=True as the shortest text that reads back to the
    same float64 (data, which a 6-digit copy would blur: 1234567.89, a unix time), whole numbers as integers, NaN as
    an empty cell; text as is, quoted where needed), written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(header)
    w.writerows(_cells(rows, exact))
    write_text_atomic(path, buf.getvalue())


class PartialCsv:
    """A CSV output written as it goes, chunk by chunk: rows are appended to OUT.partial (each chunk closed before the
    next is made: a kill loses at most the chunk being made), renamed to OUT by `finish`. resume: continue an
    interrupted OUT.partial (cut back to its last whole line; `done` rows are in it, `header` its first line); without
    resume an existing OUT.partial is refused, as it holds an interrupted run's rows. settings: what the rows depend
    on (JSON-able), kept beside them in OUT.partial.json: a resume with other settings is refused. out None: nothing is
    written (the rows are made for what they add up to). Under torchrun rank 0 alone writes; every rank learns `done`
    and `header`. Call `release_memory` after each chunk: a long stream then stays at one chunk's memory."""

    def __init__(self, out, resume: bool, settings: dict | None = None):
        check(out is not None or not resume, "resume continues rows written to a file: give out", "resume")
        self.out, self.main = out and Path(out), is_main_process() and out is not None
        self.partial, self.settings_file = Path(f"{out}.partial"), Path(f"{out}.partial.json")
        self.done, self.header = on_main(lambda: self._open(resume, settings)) if out is not None else (0, None)
        steady_heap()

    def fill(self, path, chunk_rows: int, make, *, n: int = 0, exact=False, progress=False, desc="rows") -> int:
        """The rows of the CSV at `path` after those done (its first n; 0: all), chunk by chunk (`data.csv_chunks`):
        make(chunk) -> (header, rows) is written as it comes. Returns the rows done in all. A DiffusekitError (a bad
        row) keeps the rows before it (`stopped`); OUT is complete at the end (`finish`)."""
        check(isinstance(chunk_rows, int) and chunk_rows >= 1, f"chunk_rows must be at least 1, got {chunk_rows}",
              "chunk_rows")
        check(isinstance(n, int) and n >= 0, f"n must be >= 0 (0: all), got {n}", "n")
        wanted, done = n or float("inf"), self.done
        total = min(wanted, sum(1 for _ in open(path, "rb"))) if progress and is_main_process() else None  # a bar
        with tqdm(total=total, initial=done, disable=total is None, desc=desc, unit="row") as bar:
            try:
                for chunk in csv_chunks(str(path), chunk_rows, skip=done):
                    if chunk.start >= wanted:
                        break
                    chunk.cells = chunk.cells[:int(min(len(chunk.cells), wanted - chunk.start))]
                    header, rows = make(chunk)
                    self.write(header, rows, exact)
                    done += len(rows)
                    bar.update(len(rows))
                    del chunk, rows
                    release_memory()
            except DiffusekitError as e:
                raise self.stopped(e, done) from None
        check(done > 0, f"{path} has no rows", "data")
        self.finish()
        return done

    def _open(self, resume, settings):
        p = self.partial
        if not resume:
            if p.exists():
                raise DiffusekitError(f"{p} holds the rows of an interrupted run: resume to continue it, or remove it "
                                      f"(nothing was changed)", "resume")
            if settings is not None:
                write_text_atomic(self.settings_file, json.dumps(settings))
            return 0, None
        if not p.is_file():
            raise DiffusekitError(f"nothing to resume: no {p} (an interrupted run leaves it)", "resume")
        if settings is not None:
            settings = json.loads(json.dumps(settings))  # compared as read back
            try:
                before = read_json(self.settings_file)
            except (OSError, ValueError):
                before = None
            differ = sorted(k for k in {*settings, *(before or {})} if (before or {}).get(k) != settings.get(k))
            if before is None or differ:
                raise DiffusekitError(f"{p} was made with other settings ({', '.join(differ) or 'unknown: no '}"
                                      f"{'' if differ else str(self.settings_file)}): resume with the same ones, or "
                                      f"remove it", *differ)
        with open(p, "rb+") as f:  # read in blocks: the file may be far larger than memory
            f.truncate(_last_line_end(f))  # a row cut short by the interruption is made again
            f.seek(0)
            first = f.read(1 << 20)
            header = next(csv.reader(io.StringIO(first.decode("utf-8", "replace"))), None)
            lines = first.count(b"\n") + sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        return max(0, lines - 1), header

    def written(self, chunk_rows: int):
        """The rows already in OUT.partial (a resumed run's), as DataFrames of text cells of at most chunk_rows rows."""
        import pandas as pd

        if self.header:
            yield from pd.read_csv(self.partial, chunksize=chunk_rows, dtype=str, keep_default_na=False)

    def write(self, header, rows, exact=False):
        """One chunk's rows (cells as for write_csv_atomic), after the header when the file is new."""
        if self.main:
            try:
                with open(self.partial, "a", newline="") as f:
                    w = csv.writer(f, lineterminator="\n")
                    if f.tell() == 0:
                        w.writerow(header)
                    w.writerows(_cells(rows, exact))
            except OSError as e:  # a full disk: a resume cuts the file back to its last whole row
                raise DiffusekitError(f"cannot write {self.partial}: {e.strerror or e}") from None

    def stopped(self, error: DiffusekitError, n: int) -> DiffusekitError:
        """The error that stopped the stream after n rows: with none written OUT.partial is removed, else kept for a
        resume and the message says so."""
        if self.out is None:
            return error
        if n == 0:
            if self.main:
                self.partial.unlink(missing_ok=True)
                self.settings_file.unlink(missing_ok=True)
            return error
        return DiffusekitError(f"{error} ({n} rows are done in {self.partial}: resume once the cause is fixed)",
                               *error.params, "resume")

    def finish(self):
        if self.main:
            os.replace(self.partial, self.out)
            self.settings_file.unlink(missing_ok=True)


def _last_line_end(f) -> int:
    """The offset just past the last newline of the binary file f (0 if it has none), read backwards in blocks."""
    end = f.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - (1 << 20))
        f.seek(start)
        i = f.read(end - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _cells(rows, exact: bool):
    return ([v if isinstance(v, str) else _number_text(v, exact) for v in row] for row in rows)


def _number_text(v, exact: bool) -> str:
    """A CSV cell: missing (NaN) empty, a whole number as an integer (an integer column reads back as one)."""
    v = float(v)
    if v != v:
        return ""
    if v.is_integer() and abs(v) < 2 ** 53:
        return str(int(v))
    return repr(v) if exact else f"{v:.6g}"


def read_json(path):
    """json.loads of a file; nesting too deep for the parser is a ValueError, as any other malformed JSON is."""
    try:
        return json.loads(Path(path).read_text())
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None


def write_json_atomic(path: Path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2))


def save_tensors_atomic(path, tensors: dict):
    """One safetensors file, written under a temporary name and renamed into place."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)


def save_checkpoint(path, tensors: dict, meta: dict):
    """tensors: {file stem: {name: tensor}}; meta: JSON-able. Atomic: tmp dir, then rename."""
    path = Path(path)
    tmp, old = path.with_name(f".{path.name}.tmp-{os.getpid()}"), path.with_name(f".{path.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for stem, sd in tensors.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in sd.items()}, str(tmp / f"{stem}.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    except BaseException as e:  # a full disk, a file-size limit, an interrupt: the previous checkpoint stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise DiffusekitError(f"cannot write the checkpoint {path} ({e}); the previous one is intact") from None
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path, stems=("model", "ema"), attempts: int = 5):
    """Returns ({stem: state dict}, meta); falls back to the previous copy if a crash hit mid-rename. A reader beside a
    training run (sample, serve) may see the checkpoint replaced while it reads: then it reads the new one."""
    path = Path(path)
    for attempt in range(attempts):
        before = _identity(path)
        try:
            return _read_checkpoint(path, stems)
        except DiffusekitError:
            if attempt == attempts - 1 or _identity(path) == before:  # damaged where it lies: said at once
                raise
            time.sleep(0.02 * (attempt + 1))


def _identity(path: Path):
    """Which directory `path` (or its previous copy) is now: save_checkpoint replaces it by renaming another."""
    try:
        return os.stat(path).st_ino
    except OSError:
        try:
            return ("old", os.stat(path.with_name(f".{path.name}.old")).st_ino)
        except OSError:
            return None


def _read_checkpoint(path: Path, stems):
    if not path.is_dir() and path.with_name(f".{path.name}.old").is_dir():
        path = path.with_name(f".{path.name}.old")
    if not path.is_dir():
        raise DiffusekitError(f"no checkpoint at {path}")
    try:
        meta = read_json(path / "state.json")
        tensors = {s: load_file(str(path / f"{s}.safetensors")) for s in stems if (path / f"{s}.safetensors").exists()}
    except (OSError, ValueError, SafetensorError) as e:
        raise DiffusekitError(f"corrupt or truncated checkpoint {path}: {e}") from None
    missing = [s for s in stems if s not in tensors]
    if missing:
        raise DiffusekitError(f"checkpoint {path} lacks {', '.join(m + '.safetensors' for m in missing)}")
    try:  # the counters every reader uses, checked once here
        meta["step"] = int(meta["step"])
        meta["nimg"], meta["elapsed"] = int(meta.get("nimg", 0)), float(meta.get("elapsed", 0.0))
    except (TypeError, KeyError, ValueError):
        raise DiffusekitError(f"corrupt checkpoint {path}: its state.json lacks a whole step count") from None
    return tensors, meta


def optimizer_to_tensors(opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    return tensors, sd["param_groups"]


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict, param_groups):
    state = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def is_diffusers_folder(path) -> bool:
    """A folder saved by diffusers: a pipeline's model_index.json, or a model's config.json naming its class."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return True
    try:
        return "_class_name" in read_json(path / "config.json")
    except (OSError, ValueError, TypeError):
        return False


def read_run_config(path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise DiffusekitError(f"{path} is a file, not a run directory" if path.exists() else
                              f"run directory {path} does not exist")
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise DiffusekitError(f"{path} is not a run directory (no config.json)")
    try:
        cfg = read_json(cfg_path)
    except ValueError as e:
        raise DiffusekitError(f"{cfg_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or not {"model", "codec"} <= set(cfg):
        raise DiffusekitError(f"{cfg_path} is not a diffusekit run config (no model or codec)")
    return cfg


def save_samples(path, decoded, labels=None):
    """Samples in user units: `.npz` (arr_0, and arr_1 labels), a `.csv` (a table: a DataFrame or rows), or a folder
    of PNGs (images; the class in each name when labelled). Files are written atomically."""
    path = str(path)
    if isinstance(decoded, list):  # text: one sample per line (.jsonl: one JSON string per line, exact)
        if path.endswith(".jsonl"):
            write_text_atomic(path, "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in decoded))
        elif path.endswith(".txt"):  # samples holding line breaks are separated by an empty line
            sep = "\n\n" if any("\n" in t for t in decoded) else "\n"
            write_text_atomic(path, sep.join(decoded) + "\n")
        else:
            raise DiffusekitError(f"text is written as .txt or .jsonl, got {path!r}", "out")
        return
    is_table = type(decoded).__name__ == "DataFrame"
    if path.endswith(".npz"):
        values = decoded.to_numpy() if is_table else decoded
        if values.dtype == object:
            raise DiffusekitError(f"{path}: a table with categorical columns is written as .csv, not .npz", "out")
        arrays = {"arr_0": values}
        if labels is not None:
            arrays["arr_1"] = np.asarray(labels)
        save_npz_atomic(path, **arrays)
    elif is_table or decoded.ndim == 2:
        if not path.endswith(".csv"):
            raise DiffusekitError(f"a table is written as .csv or .npz, got {path!r}", "out")
        columns = list(decoded.columns) if is_table else [f"x{i}" for i in range(decoded.shape[1])]
        write_csv_atomic(path, columns, decoded.to_numpy() if is_table else decoded, exact=True)
    else:
        os.makedirs(path, exist_ok=True)
        for i, im in enumerate(decoded):
            name = f"{i:06d}" + (f"_class{int(labels[i])}" if labels is not None else "") + ".png"
            save_image_atomic(Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im), os.path.join(path, name))
