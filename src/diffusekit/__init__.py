"""diffusekit: diffusion models for real work. Everything talks to one denoiser D(x, sigma) in sigma space.

    import diffusekit as dk
    run = dk.train("digits", out="runs/digits", minutes=3)      # or dk.load(path); arrays and DataFrames too
    images = run.sample(16, temperature=0.8, label=3)
    fast = dk.distill("runs/digits", out="runs/digits-ct", minutes=1)   # samples in 1-4 network calls
    det = dk.AnomalyDetector.fit(normal_rows, minutes=3)
    result = det.score(incoming)

docs/ has a page per capability; docs/design.md the architecture.
"""
from .detector import AnomalyDetector
from .errors import DiffusekitError
from .evaluate import evaluate
from .precond import Denoiser, from_diffusers, guided, unconditional
from .run import Latents, Likelihood, Restoration, Run, distill, load, train
from .samplers import SAMPLERS, SampleConfig, generate

__all__ = ["AnomalyDetector", "Denoiser", "DiffusekitError", "Latents", "Likelihood", "Restoration", "Run", "SAMPLERS",
           "SampleConfig", "distill", "evaluate", "from_diffusers", "generate", "guided", "load", "train", "unconditional"]
__version__ = "0.2.0"
