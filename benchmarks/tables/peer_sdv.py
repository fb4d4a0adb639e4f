"""One peer synthesizer from SDV (run inside runs/venv-sdv, never in diffusekit's environment: SDV pins pandas < 3):

    python peer_sdv.py ctgan|tvae|copula TRAIN.csv OUT.csv MINUTES N_ROWS CATEGORICAL_COLUMNS_JSON

CTGAN and TVAE (SDV's defaults otherwise: 300 epochs, batch 500) get as many epochs as fit in MINUTES, measured from
a one-epoch fit; they stop at 300 if that comes first. The Gaussian copula fits in seconds. Prints one JSON line.
"""
import json
import sys
import time

import pandas as pd
from sdv.metadata import Metadata
from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

system, train_csv, out_csv, minutes, n_rows, categorical = sys.argv[1:7]
df = pd.read_csv(train_csv)
metadata = Metadata.detect_from_dataframe(df)
categorical = set(json.loads(categorical))
for c in df.columns:  # the column types diffusekit reads (detection may call a column an id and not model it)
    metadata.update_column(c, sdtype="categorical" if c in categorical else "numerical")
t0 = time.time()
if system == "copula":
    model, epochs = GaussianCopulaSynthesizer(metadata), None
    model.fit(df)
else:
    cls = {"ctgan": CTGANSynthesizer, "tvae": TVAESynthesizer}[system]
    probe = cls(metadata, epochs=1)
    probe.fit(df)
    per_epoch = time.time() - t0
    epochs = max(1, min(300, int((float(minutes) * 60 - per_epoch) / per_epoch)))
    model = cls(metadata, epochs=epochs)
    model.fit(df)
seconds = time.time() - t0
model.sample(int(n_rows)).to_csv(out_csv, index=False)
print(json.dumps({"system": system, "epochs": epochs, "train_seconds": round(seconds, 1)}))
