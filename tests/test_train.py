"""End to end: real (tiny, seconds-long) training runs: fit, resume exactness, data parallel, NaN handling."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from diffusekit import load as load_run
from diffusekit.samplers import SampleConfig, sample
from diffusekit.analytic import gmm8
from diffusekit.run import resume_config
from diffusekit.errors import DiffusekitError
from diffusekit.train import TrainConfig, Trainer


def train(cfg, resume=False, progress=False):
    return Trainer(cfg, resume=resume, progress=progress).run()


def log_losses(run):
    with open(os.path.join(run, "log.csv")) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_gmm8_fits(tmp_path):
    out = str(tmp_path / "gmm")
    train(TrainConfig(data="toy:gmm8", out=out, preset="small", steps=600, batch_size=256, lr=2e-3, ckpt_every=600),
          progress=False)
    run = load_run(out)
    truth = gmm8()

    def mean_loglik(denoiser):
        x = sample(denoiser, run.model_config, 2000, SampleConfig(steps=20, seed=1))
        return float(truth.log_prob(torch.from_numpy(run.codec.decode(x)).double()).mean())

    trained = mean_loglik(run.denoiser)
    untrained = mean_loglik(load_run(out, ema=False).denoiser.apply(_reset))
    entropy, _ = truth.entropy_mc(50_000)
    # The true data's mean log-density is -entropy (-3.53 nats). Measured when written: 600 steps reach -4.4
    # (1500 steps -3.7), an untrained net -14.7. Within 1.5 nats and 5 nats better than untrained = "fits".
    assert trained > -entropy - 1.5, (trained, -entropy)
    assert untrained < trained - 5.0, (untrained, trained)


def _reset(m):
    if hasattr(m, "reset_parameters"):
        m.reset_parameters()


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    # a finished run extended: at a constant rate (a decaying one decays again over the new budget); a run killed
    # inside its budget resumes exactly with the default decay too (test_crash.py)
    kw = dict(data="digits", preset="tiny", batch_size=32, log_every=5, ckpt_every=10, seed=3, sample_every=0,
              lr_decay_frac=0.0)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train(TrainConfig(out=a, steps=30, **kw), progress=False)
    train(TrainConfig(out=b, steps=15, **kw), progress=False)
    train(resume_config(b, steps=30), resume=True, progress=False)
    assert log_losses(a) == log_losses(b)
    pa, pb = load_file(f"{a}/last/model.safetensors"), load_file(f"{b}/last/model.safetensors")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    ea, eb = load_file(f"{a}/last/ema.safetensors"), load_file(f"{b}/last/ema.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_lr_schedule_warmup_then_inverse_sqrt_decay(tmp_path):
    kw = dict(data="toy:moons", preset="tiny", batch_size=100, steps=1, lr=1e-3, warmup_steps=10)
    const = Trainer(TrainConfig(out=str(tmp_path / "c"), **kw), progress=False)
    decay = Trainer(TrainConfig(out=str(tmp_path / "d"), lr_decay_kimg=2.0, **kw), progress=False)
    assert const.learning_rate(4) == pytest.approx(5e-4) == decay.learning_rate(4)  # warm-up: 500 images
    assert const.learning_rate(79) == pytest.approx(1e-3)
    assert decay.learning_rate(19) == pytest.approx(1e-3)  # 2,000 images: the decay starts here
    assert decay.learning_rate(79) == pytest.approx(1e-3 / 2)  # 8,000 images: 1/sqrt(4)
    decay.run()
    assert decay.opt.param_groups[0]["lr"] == pytest.approx(decay.learning_rate(0))  # the loop uses it


def test_lr_decay_frac_falls_linearly_to_zero_over_the_end_of_the_budget(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "w"), data="toy:moons", preset="tiny", batch_size=50, steps=40, lr=1e-3,
                      warmup_steps=0, lr_decay_frac=0.25, log_every=1)
    t = Trainer(cfg, progress=False)
    assert t.learning_rate(5, 0.5) == pytest.approx(1e-3)  # stable until the last quarter
    assert t.learning_rate(5, 0.875) == pytest.approx(5e-4) and t.learning_rate(5, 1.0) == 0.0
    t.run()
    with open(tmp_path / "w" / "log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # step i (0-based) ran with progress i / 40: 1e-3 up to step 30, then 1e-3 * (40 - i) / 10
    assert lrs[:31] == pytest.approx([1e-3] * 31) and lrs[30:] == pytest.approx([1e-4 * (40 - i) for i in range(30, 40)])
    with pytest.raises(DiffusekitError, match="lr_decay_frac must be in"):
        TrainConfig(out=str(tmp_path / "x"), data="toy:moons", steps=1, lr_decay_frac=1.5).validate()


def test_the_recipe_is_filled_once_per_run_images_and_vectors_from_scratch(tmp_path, monkeypatch):
    train_module = sys.modules[Trainer.__module__]  # the package's name `train` is the function
    for native in (True, False):
        monkeypatch.setattr(train_module, "native_bf16", lambda device: native)
        t = Trainer(TrainConfig(out=str(tmp_path / f"img{native}"), data="digits", preset="tiny", steps=1),
                    progress=False)
        assert (t.cfg.bf16, t.cfg.lr_decay_frac) == (native, 0.3)
        saved = json.loads((tmp_path / f"img{native}" / "config.json").read_text())["train"]
        assert (saved["bf16"], saved["lr_decay_frac"]) == (native, 0.3)  # a resume reads these, on any machine
    vec = Trainer(TrainConfig(out=str(tmp_path / "vec"), data="toy:moons", preset="tiny", steps=1), progress=False)
    assert (vec.cfg.bf16, vec.cfg.lr_decay_frac, vec.cfg.holdout) == (False, 0.3, 0.0)  # no rows held out
    (tmp_path / "lines.txt").write_text("".join(f"line {i} of the log\n" for i in range(40)))
    text = Trainer(TrainConfig(out=str(tmp_path / "text"), data=f"lines:{tmp_path / 'lines.txt'}", preset="tiny",
                               steps=1), progress=False)
    assert (text.cfg.bf16, text.cfg.lr_decay_frac) == (False, 0.0)
    rows = tmp_path / "rows.csv"  # a table read from a CSV: fp32, the learning rate falling over the last 30%
    rows.write_text("a,b\n" + "".join(f"{i % 7},{'xy'[i % 2]}\n" for i in range(50)))
    table = Trainer(TrainConfig(out=str(tmp_path / "table"), data=str(rows), preset="tiny", steps=1), progress=False)
    assert (table.cfg.bf16, table.cfg.lr_decay_frac) == (False, 0.3)
    table_tuned = Trainer(TrainConfig(out=str(tmp_path / "table2"), data=str(rows), preset="tiny", steps=1,
                                      init_from=str(tmp_path / "table")), progress=False)
    assert table_tuned.cfg.lr_decay_frac == 0.0
    given = Trainer(TrainConfig(out=str(tmp_path / "given"), data="digits", preset="tiny", steps=1, bf16=False,
                                lr_decay_frac=0.1), progress=False)
    assert (given.cfg.bf16, given.cfg.lr_decay_frac) == (False, 0.1)
    tuned = Trainer(TrainConfig(out=str(tmp_path / "tuned"), data="digits", preset="tiny", steps=1,
                                init_from=str(tmp_path / "imgTrue")), progress=False)
    assert (tuned.cfg.bf16, tuned.cfg.lr_decay_frac) == (False, 0.0)


@pytest.mark.slow
def test_grad_accumulation_matches_one_big_batch(tmp_path):
    kw = dict(data="toy:moons", preset="tiny", batch_size=64, steps=5, seed=0, log_every=1)
    one = Trainer(TrainConfig(out=str(tmp_path / "one"), **kw), progress=False)
    one.run()
    acc = Trainer(TrainConfig(out=str(tmp_path / "acc"), grad_accum=4, **kw), progress=False)
    acc.run()
    for p, q in zip(one.net.parameters(), acc.net.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("table", [False, True], ids=["toy", "held-out-table"])
def test_torchrun_two_processes_match_one(tmp_path, table):
    data = "toy:moons"
    if table:  # a CSV table: held-out rows, their loss every 2 steps (rank 0's, broadcast), best/ chosen by it
        data = str(tmp_path / "t.csv")
        pd.DataFrame(np.random.default_rng(0).normal(size=(300, 3)), columns=["a", "b", "c"]).to_csv(data, index=False)
    kw = ["--data", data, "--preset", "tiny", "--batch-size", "64", "--steps", "8", "--seed", "0",
          "--log-every", "1", "--no-progress", *(["--eval-every", "2"] if table else [])]
    single = str(tmp_path / "single")
    subprocess.run([sys.executable, "-m", "diffusekit", "train", "--out", single, *kw], check=True,
                   capture_output=True, timeout=300)
    double = str(tmp_path / "ddp")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "diffusekit", "train", "--out", double, *kw], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    p1, p2 = load_file(f"{single}/last/model.safetensors"), load_file(f"{double}/last/model.safetensors")
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(log_losses(single), log_losses(double), rtol=1e-4)
    if table:
        one, two = (pd.read_csv(f"{d}/eval.csv") for d in (single, double))
        assert list(one["step"]) == list(two["step"]) == [2, 4, 6, 8]
        np.testing.assert_allclose(one["held_out_loss"], two["held_out_loss"], rtol=1e-4)
        assert (Path(double) / "best").is_dir()


@pytest.mark.slow
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    from diffusekit.cli import main

    out = str(tmp_path / "nan")
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "toy:moons", "--out", out, "--preset", "tiny", "--steps", "200", "--lr", "1e30",
              "--grad-clip", "0", "--warmup-steps", "1", "--ckpt-every", "1", "--no-progress"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "loss became" in err and "Traceback" not in err
    params = load_file(f"{out}/last/model.safetensors")
    assert all(torch.isfinite(v).all() for v in params.values())
    load_run(out)  # the kept checkpoint loads


@pytest.mark.slow
def test_bf16_and_vp_eps_recipe_train(tmp_path):
    # the DDPM recipe (eps, uniform VP timesteps, timestep-conditioned) and bf16 autocast both train and sample
    out = str(tmp_path / "vp")
    train(TrainConfig(data="digits", out=out, preset="tiny", steps=3, batch_size=16, parameterization="eps",
                      noise="vp", vp_schedule="cosine", bf16=True), progress=False)
    run = load_run(out)
    assert run.denoiser.alpha_bars is not None and run.model_config.sigma_max > 100
    x = sample(run.denoiser, run.model_config, 4, SampleConfig(sampler="ddim", steps=5, grid="vp"),
               labels=torch.arange(4))
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_tensorboard_mirrors_the_logs_and_the_sample_grid(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(data="toy:moons:500", out=str(tmp_path / "run"), preset="tiny", steps=6, batch_size=50,
                      log_every=2, eval_every=3, eval_samples=50, tensorboard=True)
    Trainer(cfg, progress=False).run()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    log = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    losses = [(e.step, e.value) for e in events.Scalars("log/loss")]
    assert [s for s, _ in losses] == [int(r["step"]) for r in log] == [2, 4, 6]
    np.testing.assert_allclose([v for _, v in losses], [float(r["loss"]) for r in log], rtol=1e-6)
    assert {"log/lr", "log/grad_norm", "log/img_per_s", "eval/energy_distance"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("eval/energy_distance")] == [3, 6]
    image = events.Images("samples")[-1]
    assert image.step == 6 and image.width > 10 and image.height > 10
