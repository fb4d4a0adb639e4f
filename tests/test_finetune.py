"""Fine-tuning (train --init-from RUN): the new run starts from the source's EMA weights, keeps the label embedding
of each class it knows by name (a new class gets a fresh one), keeps the default learning rate (measured better than
a tenth of it) and records where it came from."""
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import diffusekit as dk
from test_cli import cli, one_line_error


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    d = tmp_path_factory.mktemp("finetune")
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    old = digits.target < 8
    np.savez(d / "eight.npz", images[old], digits.target[old])
    np.savez(d / "ninth.npz", images[digits.target == 8], digits.target[digits.target == 8])
    assert cli("train", "--data", d / "eight.npz", "--out", d / "source", "--preset", "tiny", "--steps", 20,
               "--batch-size", 32, "--no-progress") == 0
    return d


def test_fine_tuning_starts_from_the_source(parts, capsys):
    d = parts
    assert cli("train", "--data", d / "ninth.npz", "--out", d / "tuned", "--init-from", d / "source", "--steps", 2,
               "--batch-size", 16, "--warmup-steps", 0, "--lr", 2e-4, "--no-progress") == 0
    saved = json.loads((d / "tuned" / "config.json").read_text())
    assert saved["train"]["lr"] == 2e-4 and saved["init_from"]["step"] == 20
    assert saved["init_from"]["path"] == str((d / "source").resolve())
    assert saved["class_names"] == [str(i) for i in range(9)]
    src, tuned = dk.load(d / "source").denoiser.net.state_dict(), dk.load(d / "tuned", ema=False).denoiser.net.state_dict()
    # two Adam steps of lr 2e-4 move each weight by at most about 4e-4; a fresh network differs by O(0.1)
    for k in ("inp.weight", "out.2.weight"):
        assert (tuned[k] - src[k]).abs().max() < 1e-3, k
    emb_src, emb = src["embed.class_emb.weight"], tuned["embed.class_emb.weight"]  # source: 8 classes + null
    assert emb.shape[0] == 10 and (emb[:8] - emb_src[:8]).abs().max() < 1e-3 and (emb[9] - emb_src[8]).abs().max() < 1e-3
    assert (emb[8][None] - emb_src[:8]).abs().amax(1).min() > 1e-2, "the new class's embedding should be fresh"
    assert cli("info", d / "tuned") == 0 and "fine-tuned   from" in capsys.readouterr().out
    assert cli("train", "--out", d / "tuned", "--resume", "--steps", 3, "--no-progress") == 0  # resumes alone


def test_a_source_that_does_not_fit_is_refused(parts, tmp_path, capsys):
    assert cli("train", "--data", "toy:moons", "--out", tmp_path / "t", "--init-from", parts / "source", "--steps", 1) != 0
    one_line_error(capsys, 1, "--init-from", "images")
    assert cli("train", "--data", "digits", "--out", tmp_path / "t", "--init-from", tmp_path / "nothing", "--steps", 1) != 0
    one_line_error(capsys, 1, "does not exist")
    np.savez(tmp_path / "colour.npz", np.random.default_rng(0).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8))
    assert cli("train", "--data", tmp_path / "colour.npz", "--out", tmp_path / "t", "--init-from", parts / "source",
               "--steps", 1) != 0
    one_line_error(capsys, 1, "does not fit this data")


def test_fine_tuning_keeps_the_learning_rate_and_an_explicit_one_wins():
    from diffusekit.train import TrainConfig

    assert TrainConfig(data="digits", out="x", steps=1).lr == 2e-3
    assert TrainConfig(data="digits", out="x", steps=1, init_from="r").lr == 2e-3
    assert TrainConfig(data="digits", out="x", steps=1, init_from="r", lr=1e-3).lr == 1e-3
    torch.manual_seed(0)
