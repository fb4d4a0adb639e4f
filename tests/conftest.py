import os

import torch

# Under pytest-xdist each worker takes one core: two workers with torch's default threads each would
# oversubscribe the cores (spin-waiting threads), slower than running serially.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
