"""diffusekit: diffusion models for real work. Everything talks to one denoiser D(x, sigma) in sigma space."""
from .api import pick_labels, sample, sigma_grid
from .checkpoint import Run, load_run
from .errors import DiffusekitError
from .precond import Denoiser, from_diffusers, guided
from .samplers import SAMPLERS, generate

__all__ = ["Denoiser", "DiffusekitError", "Run", "SAMPLERS", "from_diffusers", "generate", "guided", "load_run",
           "pick_labels", "sample", "sigma_grid"]
__version__ = "0.1.0"
