"""What the command line checks about the files it will write, before any work is spent: nothing already saved is lost
to a typo (an output over an input, over a run's own files, a file where a folder goes)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DiffusekitError

# what a run folder holds (training writes them): outputs of other commands may sit beside them, never over them
RUN_ENTRIES = ("config.json", "log.csv", "eval.csv", "last", "best", "samples", "evaluator", ".last.old", ".best.old", ".lock")


def check_outputs(outputs, inputs=(), runs=(), detector=None):
    """Every output path, before anything is written. outputs: (flag, path, kind) with kind "file" or "folder" (path
    None: not given). Refused: a file where a folder goes or the reverse; an input of the same command, or (for a
    folder) one inside it; a run's own files, or the run folder itself as a folder of outputs; an existing file of the
    detector folder. Missing folders are made when written."""
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
        if detector is not None and p.exists() and Path(detector).resolve() in p.parents:
            raise DiffusekitError(f"{flag} {path} would overwrite a file of the detector; choose another path "
                                  f"(nothing was written)")
        above = p if p.is_dir() else next(q for q in p.parents if q.exists())
        if not above.is_dir():
            raise DiffusekitError(f"{flag} {path}: {above} is a file, not a folder (nothing was written)")
        if not os.access(above, os.W_OK):
            raise DiffusekitError(f"{flag} {path}: cannot write in {above} (nothing was written)")


def samples_out(path, kind: str) -> str | None:
    """What `checkpoint.save_samples` writes at `path` for a run of this data kind: "file" or "folder"."""
    if not path:
        return None
    if kind == "text":
        if not path.endswith((".txt", ".jsonl")):
            raise DiffusekitError(f"--out must be a .txt or .jsonl file for text, got {path!r}")
        return "file"
    if path.endswith(".npz") or (kind == "vector" and path.endswith(".csv")):
        return "file"
    if kind == "vector":
        raise DiffusekitError(f"--out must be a .csv or .npz file for a table, got {path!r}")
    if os.path.splitext(path)[1].lower() in (".csv", ".json", ".txt", ".png", ".jpg", ".jpeg"):
        raise DiffusekitError(f"--out {path}: images are written as an .npz file or a folder of PNGs")
    return "folder"


def restorations_out(path) -> str:
    """A restoration's --out: an .npz, one .png, or a folder."""
    if not (path.endswith(".npz") or path.lower().endswith(".png") or not os.path.splitext(path)[1]):
        raise DiffusekitError(f"--out must be a .npz, a .png or a folder, got {path!r}")
    return "file" if path.endswith(".npz") or path.lower().endswith(".png") else "folder"


def check_suffix(flag, path, *suffixes):
    if path and not path.lower().endswith(suffixes):
        raise DiffusekitError(f"{flag} must be a {' or '.join(suffixes)} file, got {path!r}")
