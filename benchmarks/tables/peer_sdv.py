"""One peer synthesizer from SDV (run inside runs/venv-sdv, never in diffusekit's environment: SDV pins pandas < 3):

    python peer_sdv.py ctgan|tvae|copula TRAIN.csv OUT.csv MINUTES N_ROWS CATEGORICAL_COLUMNS_JSON

CTGAN and TVAE (SDV's defaults otherwise, batch 500) get as many epochs as fit in MINUTES, more than their default
300 where the budget allows: after a warm-up fit, the difference of a 6- and a 30-epoch fit gives the time per epoch
and the setup, which set the epochs of the final fit; the probes count against the budget. The Gaussian copula fits in seconds. Prints one JSON line.
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
    cls = {"ctgan": CTGANSynthesizer, "tvae": TVAESynthesizer}[system]

    def timed_fit(n_epochs):
        t = time.time()
        cls(metadata, epochs=n_epochs).fit(data)
        return time.time() - t

    timed_fit(1)  # warm-up: the first fit pays one-time costs (a cold probe made the estimate overrun the budget)
    t6, t30 = timed_fit(6), timed_fit(30)  # setup dominates a short fit: the time per epoch is their difference
    per_epoch = max((t30 - t6) / 24, 1e-4)
    epochs = max(1, int((float(minutes) * 60 - (time.time() - t0) - (t6 - 6 * per_epoch)) / per_epoch))
    model = cls(metadata, epochs=epochs)
    model.fit(data)
seconds = time.time() - t0
rows = model.sample(int(n_rows))
(rows["table"] if isinstance(rows, dict) else rows).to_csv(out_csv, index=False)
print(json.dumps({"system": system, "epochs": epochs, "train_seconds": round(seconds, 1)}))
