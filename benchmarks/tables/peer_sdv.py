"""One peer synthesizer from SDV (run inside runs/venv-sdv, never in diffusekit's environment: SDV pins pandas < 3):

    python peer_sdv.py ctgan|tvae|copula TRAIN.csv OUT.csv MINUTES N_ROWS CATEGORICAL_COLUMNS_JSON

CTGAN and TVAE (SDV's defaults otherwise, batch 500) train until MINUTES have passed since the start (their setup
included), however many epochs that is, more than their default 300 where the budget allows: their epoch loop is
driven through a deadline (the `tqdm` their loops iterate over is replaced by one that stops at it), so the budget
is kept to within one epoch. The Gaussian copula fits in seconds. Prints one JSON line.
"""
import json
import sys
import time

import pandas as pd
from sdv.metadata import Metadata
from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

system, train_csv, out_csv, minutes, n_rows, categorical = sys.argv[1:7]
df = pd.read_csv(train_csv)
categorical = set(json.loads(categorical))
# the column types diffusekit reads, given rather than detected (detection may call a column an id and not model it)
metadata = Metadata.load_from_dict({"tables": {"table": {"columns": {
    c: {"sdtype": "categorical" if c in categorical else "numerical"} for c in df.columns}}}})
data = {"table": df}  # SDV 2 takes a dict of tables, a single table included
t0 = time.time()
if system == "copula":
    model, epochs = GaussianCopulaSynthesizer(metadata), None
    model.fit(data)
else:
    import ctgan.synthesizers.ctgan
    import ctgan.synthesizers.tvae

    deadline, epochs = t0 + float(minutes) * 60, 0

    class UntilDeadline:  # stands in for tqdm(range(epochs)) in the peers' epoch loops
        def __init__(self, iterable, disable=True):
            self.iterable = iterable

        def __iter__(self):
            global epochs
            for i in self.iterable:
                if time.time() >= deadline:
                    return
                epochs = i + 1
                yield i

        def set_description(self, *args, **kwargs):
            pass

    ctgan.synthesizers.ctgan.tqdm = ctgan.synthesizers.tvae.tqdm = UntilDeadline
    cls = {"ctgan": CTGANSynthesizer, "tvae": TVAESynthesizer}[system]
    model = cls(metadata, epochs=10**9)
    model.fit(data)
seconds = time.time() - t0
rows = model.sample(int(n_rows))
(rows["table"] if isinstance(rows, dict) else rows).to_csv(out_csv, index=False)
print(json.dumps({"system": system, "epochs": epochs, "train_seconds": round(seconds, 1)}))
