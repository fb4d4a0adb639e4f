"""The command line's options. Options a library config reads default to None here (not given), so that the config
applies its own default and can say when an option its method does not read was given."""
from __future__ import annotations

import argparse
import dataclasses

from ..errors import DiffusekitError
from ..samplers import (ALL_KNOBS, DEFAULT_SAMPLER, FEW_STEP_GRID, KNOBS, SAMPLERS, SDE_MIN_STEPS, VECTOR_ETA,
                        VECTOR_TUNING)
from ..schedules import GRIDS, MODEL_GRIDS
from ..train import TrainConfig, int_list
from . import commands as c

# torchrun's own parser reads a bare --n as an ambiguous prefix of its options: spell it --n-samples there
N_HELP = "number of samples (under torchrun write --n-samples)"
DEVICES = ["auto", "cpu", "cuda"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is said in one line (as every other error is), pointing at --help; options
    are spelled out (no prefixes), so that every option given is seen."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_list_option(name):
    """--channel-mults 1,2,2 / --attn-resolutions none: whole numbers, or none for an empty list."""
    def parse(text):
        try:
            return [] if text == "none" else int_list(name, text)
        except DiffusekitError:
            raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers (e.g. 1,2,2), got {text!r}") from None
    return parse


def config_options(p, cls):
    """One --option per field of a config dataclass, typed by its annotation, default None (not given)."""
    for f in dataclasses.fields(cls):
        flag, kind = "--" + f.name.replace("_", "-"), str(f.type)
        if kind == "bool":
            p.add_argument(flag, action="store_true", default=None)
            continue
        if kind == "bool | None":  # None: chosen for the run; --no-FLAG says off
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
            continue
        parse = (str if "str" in kind else int_list_option(f.name) if kind.startswith("list")
                 else int if kind.startswith("int") else float if kind.startswith("float") else str)
        default = "" if f.default is dataclasses.MISSING else f" (default {f.default})"
        p.add_argument(flag, type=parse, default=None, help=f"{f.name}{default}")


def knob_options(p):
    """The samplers' knobs (samplers.KNOBS, read off the sampler functions) as options."""
    for name, default in ALL_KNOBS.items():
        users = [s for s, knobs in KNOBS.items() if name in knobs]
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                       help=f"sampler knob of {', '.join(users)}")


def run_options(q, batch_size):
    """Options of every command that loads a run."""
    q.add_argument("run")
    q.add_argument("--batch-size", type=int, default=batch_size)
    q.add_argument("--checkpoint", default="auto", help="last, best, or auto (default: best where training chose it "
                   "on held-out rows, else last)")
    q.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    q.add_argument("--device", choices=DEVICES, default="auto")
    q.add_argument("--no-progress", action="store_true")


def ode_options(q):
    q.add_argument("--rtol", type=float, default=None, help="ODE solver relative tolerance (default 1e-5)")
    q.add_argument("--atol", type=float, default=None, help="ODE solver absolute tolerance (default 1e-5)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="diffusekit", description="Train diffusion models and sample from them.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a data spec (or --resume a run)")
    config_options(t, TrainConfig)
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=c.cmd_train)

    d = sub.add_parser("distill", help="distil a run into a consistency model that samples in 1-4 network calls "
                       "(resume with train --resume --out)")
    d.add_argument("run")
    d.add_argument("--out", required=True, help="the new run's folder")
    d.add_argument("--minutes", type=float, default=None, help="wall-clock budget")
    d.add_argument("--steps", type=int, default=None, help="optimizer steps (instead of --minutes)")
    d.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4; self: 1e-3)")
    d.add_argument("--ct-target", choices=("teacher", "self"), default=None,
                   help="what the new run learns to jump to: the clean end of the run's own ODE path (teacher, the "
                        "default) or its own output lower on the noising path of the data (self: ECT)")
    d.add_argument("--ct-q", type=float, default=None, help="self: closeness of the compared noise levels (default 4)")
    d.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (default: the source run's)")
    d.add_argument("--batch-size", type=int, default=None, help="default: the source run's")
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--device", choices=DEVICES, default=None)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=c.cmd_distill)

    s = sub.add_parser("sample", help="generate samples from a trained run")
    run_options(s, 256)
    s.add_argument("--n", "--n-samples", dest="n", type=int, default=64, help=N_HELP)
    s.add_argument("--sampler", choices=["auto", *SAMPLERS], default=None, help=f"default auto: {DEFAULT_SAMPLER} at "
                   f"{SDE_MIN_STEPS} or more steps (a table: with --eta {VECTOR_ETA:g}), else dpmpp-2m (images: sa-solver, --eta 0, "
                   f"on a karras grid to sigma {FEW_STEP_GRID['sigma_min']:g}, rho {FEW_STEP_GRID['rho']:g}); a distilled run: "
                   f"consistency")
    s.add_argument("--steps", type=int, default=None, help="noise levels of the grid (default 20; a distilled run: 2)")
    s.add_argument("--schedule", choices=list(MODEL_GRIDS + GRIDS), default=None,
                   help="sigma grid (default auto: the run's tuned grid for --steps where tune-steps made one (a "
                        "table's training makes one for 20 steps), else karras)")
    s.add_argument("--rho", type=float, default=None, help="karras grid: spacing exponent (default 7; images below "
                   f"{SDE_MIN_STEPS} steps: {FEW_STEP_GRID['rho']:g}; larger: more steps at low noise)")
    s.add_argument("--sigma-min", type=float, default=None, help="lowest grid noise level (default: the "
                   f"model's; images below {SDE_MIN_STEPS} steps: {FEW_STEP_GRID['sigma_min']:g})")
    s.add_argument("--sigma-max", type=float, default=None, help="highest grid noise level (default: the model's)")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="FILE.npz, a folder for PNGs (images) or FILE.csv (vectors)")
    s.add_argument("--grid", help="FILE.png: a grid of (up to 256) samples, or a scatter plot for vectors")
    s.add_argument("--class", dest="label", type=int, default=None, help="class index (conditional runs)")
    s.add_argument("--where", default=None, metavar="COLUMN=VALUE",
                   help="a table trained with --target COLUMN: rows of that class only")
    s.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight (default 1: none)")
    knob_options(s)
    s.add_argument("--report", action="store_true", help="also print the mean exact NLL of the samples")
    s.add_argument("--resume", action="store_true", help="continue the rows of a table's --out FILE.csv (written as "
                   "they are drawn) that an interrupted run left in FILE.csv.partial")
    s.set_defaults(func=c.cmd_sample)

    g = sub.add_parser("tune-steps", help="fit the sampling grid to a run for each step count (sample uses them)")
    run_options(g, 128)
    g.add_argument("--steps", type=int, nargs="+", required=True, help="step counts (network calls) to fit, e.g. 5 10")
    g.add_argument("--n", "--n-samples", dest="n", type=int, default=256, help="teacher trajectories (default 256)")
    g.add_argument("--order", type=int, choices=[1, 2], default=1, help="the solver scored: 1 Euler/DDIM (default: "
                   "its grids sampled best), 2 DPM-Solver++(2M)")
    g.add_argument("--candidates", type=int, default=0, help="noise levels of the fine grid (default: 64 or 4x the "
                   "most steps)")
    g.add_argument("--contraction", type=float, default=0.0, help="weigh a step's error less for landing at a high "
                   "noise level, by the Gaussian flow's shrinking of it to this power (0..2; default 0: every step "
                   f"alike; a table's training fits its grid with {VECTOR_TUNING['contraction']:g})")
    g.add_argument("--seed", type=int, default=0, help="seed of the teacher's noise (its own stream: never a "
                   "sampling seed's noise)")
    g.set_defaults(func=c.cmd_tune_steps)

    n = sub.add_parser("nll", help="negative log-likelihood of data under a run (bits/dim): exact (ODE) and ELBO")
    run_options(n, 64)
    n.add_argument("--data", required=True, help="data spec, e.g. fashion-mnist:test, rows.csv, images.npz")
    n.add_argument("--n", "--n-samples", dest="n", type=int, default=1000, help="first N samples of the data (0: all)")
    n.add_argument("--method", choices=["ode", "elbo", "both"], default=None,
                   help="default ode (exact); text: elbo, masked diffusion's bound")
    n.add_argument("--estimator", choices=["auto", "exact", "rademacher", "gaussian"], default=None,
                   help="trace estimator (auto, the default: exact for <= 32 dimensions, else Rademacher)")
    n.add_argument("--probes", type=int, default=None, help="Hutchinson probes per sample (default 1)")
    ode_options(n)
    n.add_argument("--levels", type=int, default=None, help="ELBO: noise levels per sample (default 32)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--class-labels", action="store_true", help="conditional model: p(x | the data's labels)")
    n.add_argument("--json", action="store_true", help="print one JSON object")
    n.add_argument("--csv", help="write per-sample values to this CSV (a table's CSV: as they go, in CSV.partial)")
    n.add_argument("--resume", action="store_true", help="continue the per-sample values of a table's CSV that an "
                   "interrupted run left in CSV.partial")
    n.set_defaults(func=c.cmd_nll)

    for name, fn, what in (("encode", c.cmd_encode, "data -> latent noise (probability-flow ODE)"),
                           ("decode", c.cmd_decode, "latent noise -> data (inverse of encode)")):
        q = sub.add_parser(name, help=what)
        run_options(q, 256)
        if name == "encode":
            q.add_argument("--data", "--images", dest="data", required=True, help="data spec: .npz, folder, .csv, ...")
            q.add_argument("--n", "--n-samples", dest="n", type=int, default=0, help="first N samples (0: all)")
            q.add_argument("--out", required=True, help="latents .npz (latents, source), or for a table's CSV a .csv "
                           "(index, z0, z1, ...) written as they go")
            q.add_argument("--resume", action="store_true", help="continue the latents of a .csv --out that an "
                           "interrupted run left in OUT.partial")
        else:
            q.add_argument("--latents", required=True, help=".npz or .csv written by encode (or any 'latents' array)")
            q.add_argument("--out", required=True, help=".npz, a folder for PNGs, or .csv (vectors)")
        q.add_argument("--method", choices=["ode", "ddim"], default=None, help="adaptive ODE (default), or DDIM (fast)")
        q.add_argument("--steps", type=int, default=None, help="ddim steps (default 50)")
        ode_options(q)
        q.set_defaults(func=fn)

    f = sub.add_parser("infill", help="fill the masked characters of text with a text run (the inpainting of text)")
    run_options(f, 256)
    f.add_argument("--data", required=True, help="a file of lines, or text:FILE (windows of the run's length)")
    f.add_argument("--mask", default="_", help="the character that marks what to fill (default _)")
    f.add_argument("--out", required=True, help="FILE.txt or FILE.jsonl: the filled text")
    f.add_argument("--steps", type=int, default=None, help="default: one character a step")
    f.add_argument("--temperature", type=float, default=None, help="default 1; 0: the most likely characters")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=c.cmd_infill)

    for name, what in (("inpaint", "fill masked pixels"), ("upscale", "super-resolution by an integer factor"),
                       ("denoise", "remove Gaussian noise of known sigma"), ("deblur", "undo a known blur (+ noise)")):
        r = sub.add_parser(name, help=f"{what} with any trained image model")
        run_options(r, 64)
        r.add_argument("--images", required=True, help=".npz (arr_0: uint8 0-255 or float in [0, 1]), an image "
                       "file, or a folder of images" + (" at 1/factor of the model's size" if name == "upscale" else ""))
        r.add_argument("--out", required=True, help=".npz, .png (one image) or a folder of PNGs")
        if name == "inpaint":
            r.add_argument("--mask", required=True, help="box:SIZE (centre box), random:FRACTION (missing), "
                           "half[:left|right|top|bottom], or a mask image (nonzero = fill)")
        if name == "upscale":
            r.add_argument("--factor", type=int, default=None, help="default 2")
        if name == "deblur":
            r.add_argument("--kernel", required=True, help="gaussian:SIGMA or box:SIZE (periodic boundary)")
        r.add_argument("--sigma", type=float, default=None, required=name == "denoise",
                       help="std of the measurement noise, image range [0, 1]" + ("" if name == "denoise" else
                                                                                    " (default 0)"))
        if name == "denoise":
            r.add_argument("--mmse", action="store_true", help="the posterior mean, one network call (default)")
            r.add_argument("--sample", action="store_true", help="posterior samples (stochastic sampler)")
        r.add_argument("--method", choices=["ddnm", "repaint", "dps", "tweedie", "sample"], default=None,
                       help="default: " + ("tweedie (sample with --sample)" if name == "denoise" else "repaint"))
        r.add_argument("--sampler", choices=list(SAMPLERS), default=None, help="default ddpm")
        r.add_argument("--steps", type=int, default=None, help="default 20")
        r.add_argument("--schedule", choices=list(MODEL_GRIDS + GRIDS), default=None,
                       help="sigma grid of repaint, ddnm and dps (default auto: the run's tuned grid for --steps where "
                            "tune-steps made one, else karras)")
        r.add_argument("--temperature", type=float, default=None, help="default 1")
        r.add_argument("--n-samples", type=int, default=None, help="restorations per input (their mean and spread "
                       "are written too; default 1)")
        r.add_argument("--seed", type=int, default=0)
        r.add_argument("--truth", help="the clean images, to print PSNR / SSIM and show in --compare")
        r.add_argument("--compare", help="FILE.png: input, restoration(s), mean and spread, truth")
        r.add_argument("--zeta", type=float, default=None, help="dps: step size of the measurement gradient (default 1)")
        r.add_argument("--resample", type=int, default=None, help="repaint: resamplings per step (default 4)")
        knob_options(r)
        r.set_defaults(func=c.cmd_restore)

    an = sub.add_parser("anomaly", help="anomaly detection: fit on normal data, score, report")
    asub = an.add_subparsers(dest="anomaly_command", required=True)
    f = asub.add_parser("fit", help="train models of normal data (or reuse --run), fit and calibrate the scores")
    f.add_argument("--data", required=True, help="normal data: a data spec (.csv, .npz, folder, digits, ...)")
    f.add_argument("--out", required=True, help="detector folder")
    f.add_argument("--run", action="append", help="reuse this trained run (then all of --data is held out for fit + "
                   "calibration); repeat it to score with the mean of several runs of the same data")
    f.add_argument("--minutes", type=float, default=None, help="training budget when no --run (shared by the "
                   "models; default 3)")
    f.add_argument("--models", type=int, default=None,
                   help="models to train, with different seeds, and score with as one (their mean denoiser); default 3 "
                        "for tables, 1 for images")
    f.add_argument("--steps", type=int, default=None, help="train for this many steps (per model) instead of --minutes")
    f.add_argument("--preset", choices=["tiny", "small", "base", "large"], default=None)
    f.add_argument("--holdout", type=float, default=None,
                   help="fraction of --data kept from training to fit and calibrate the scores (default 0.3, raised "
                        "to hold out 40 samples where 30 are left to train on)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--features", action="store_true",
                   help="also compare reconstructions in the shipped classifier's features (fashion-mnist, digits); it "
                        "was trained on every class of its set: not for anomalies that are classes of that set")
    f.add_argument("--batch-size", type=int, default=256)
    f.add_argument("--device", choices=DEVICES, default="auto")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=c.cmd_anomaly_fit)
    for name, fn in (("score", c.cmd_anomaly_score), ("report", c.cmd_anomaly_report)):
        q = asub.add_parser(name, help="score data (p-values, flags)" if name == "score" else
                            "AUROC, AUPRC, confusion matrix and ROC/PR plots against labels")
        q.add_argument("detector")
        q.add_argument("--data", required=True)
        q.add_argument("--out", required=True, help="scores .csv" if name == "score" else "report folder")
        q.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate of the flags")
        if name == "score":
            q.add_argument("--maps", help="folder for per-pixel anomaly maps (images)")
            q.add_argument("--resume", action="store_true", help="continue the scores of a CSV that an interrupted "
                           "run left in OUT.partial (a table's rows are scored and written as they go)")
        else:
            q.add_argument("--label-column", default=None, help="table column: 1 = anomaly, 0 = normal (images: arr_1)")
        q.add_argument("--batch-size", type=int, default=256)
        q.add_argument("--device", choices=DEVICES, default="auto")
        q.add_argument("--no-progress", action="store_true")
        q.set_defaults(func=fn)

    i = sub.add_parser("info", help="describe a run")
    i.add_argument("run")
    i.set_defaults(func=c.cmd_info)

    x = sub.add_parser("export", help="write a run in another library's format (a diffusers DDIMPipeline folder)")
    x.add_argument("run")
    x.add_argument("out", help="the folder to write (must not exist)")
    x.add_argument("--format", choices=["diffusers"], default="diffusers")
    x.add_argument("--checkpoint", default="auto", help="last, best or auto (as for sample)")
    x.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    x.set_defaults(func=c.cmd_export)

    e = sub.add_parser("evaluate", help="sample quality against a data spec (FCD, KID, precision/recall; tables: "
                                         "energy distance, column shapes, pair trends, detection, privacy)")
    e.add_argument("samples", help=".npz (arr_0), a folder of images, or a .csv table")
    e.add_argument("--reference", required=True, help="data spec, e.g. fashion-mnist:test")
    e.add_argument("--training", help="the data the model was trained on: adds the memorisation report (each "
                   "sample's nearest training item, the share of near-copies)")
    e.add_argument("--neighbours", help="FILE.png (with --training): the samples closest to a copy above their "
                   "nearest training images")
    e.add_argument("--holdout", help="a table: real rows the model never saw (privacy: the share of samples closer "
                   "to a training row than to a held-out one)")
    e.add_argument("--target", help="a table's column (with --holdout): machine-learning efficiency, boosted trees "
                   "trained on the samples and on the reference, tested on the held-out rows")
    e.add_argument("--json", help="also write the figures to this JSON file")
    e.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples for standard errors")
    e.add_argument("--cache-dir", default=".diffusekit-cache", help="where a trained feature classifier is cached")
    e.set_defaults(func=c.cmd_evaluate)

    d = sub.add_parser("demo", help="train on built-in digits for a few minutes and draw what it learned")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=float, default=3.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=c.cmd_demo)

    v = sub.add_parser("serve", help="a web page and a JSON API (/sample, /score, /nll, /health; /docs) over a run "
                                     "or detector folder")
    v.add_argument("path", help="a run folder or a detector folder")
    v.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    v.add_argument("--port", type=int, default=7860)
    v.add_argument("--token", default=None, help="require Authorization: Bearer TOKEN on the JSON API (default: "
                                                 "$DIFFUSEKIT_TOKEN, if set)")
    v.add_argument("--no-ui", action="store_true", help="the JSON API only (no gradio needed)")
    v.set_defaults(func=c.cmd_serve)
    return p
