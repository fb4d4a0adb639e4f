"""Augmentation (augment.py): the maps and their vectors, the network's conditioning on them (the zero vector is no
augmentation), and training with --augment flip / edm through the command line."""
import math

import numpy as np
import pytest
import torch

import diffusekit as dk
from diffusekit.augment import AUGMENT_DIM, apply_augment, draw_augment
from diffusekit.model import ModelConfig, build_denoiser
from test_cli import cli, one_line_error


def images(n=64, size=8):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_mirrors_are_exact_and_said_by_the_vector():
    x = images()
    for mode in ("flip", "edm"):
        theta, vec = draw_augment(len(x), mode, 0.0, torch.Generator().manual_seed(1))
        y = apply_augment(x, theta)
        mirrored = theta[:, 0, 0] < 0
        assert 10 < int(mirrored.sum()) < 54
        torch.testing.assert_close(y[mirrored], x[mirrored].flip(-1), rtol=0, atol=1e-6)
        torch.testing.assert_close(y[~mirrored], x[~mirrored], rtol=0, atol=1e-6)
        if mode == "edm":  # p = 0: nothing but the mirror
            assert vec.shape == (64, AUGMENT_DIM) and torch.equal(vec[:, 0], mirrored.float())
            assert (vec[:, 1:] == 0).all()
        else:
            assert vec is None


def test_edm_maps_rotate_scale_and_shift_as_their_vectors_say():
    theta, vec = draw_augment(4000, "edm", 0.5, torch.Generator().manual_seed(2))
    mirror, sx, sy, log_scale, cos1, sin = vec.double().T
    for v in (sx, sy, log_scale, sin):  # each transform applied to about half of the images
        assert 0.4 < float((v != 0).double().mean()) < 0.6
    angle, k = torch.atan2(sin, cos1 + 1), 2.0 ** -log_scale
    sign = 1 - 2 * mirror
    torch.testing.assert_close(theta[:, 0, 0].double(), k * torch.cos(angle) * sign, atol=1e-5, rtol=0)
    torch.testing.assert_close(theta[:, 1, 0].double(), k * torch.sin(angle) * sign, atol=1e-5, rtol=0)
    torch.testing.assert_close(theta[:, :, 2].double(), 2 * torch.stack([sx, sy], 1), atol=1e-6, rtol=0)
    # a quarter turn moves pixel centres onto pixel centres: exactly torch.rot90
    x = images(1)
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    y = apply_augment(x, quarter)
    assert any(torch.allclose(y, torch.rot90(x, k, (2, 3)), atol=1e-6) for k in (1, -1))
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    assert abs(float(torch.atan2(vec[:, 5], vec[:, 4] + 1).abs().max()) - math.pi) < 0.01


def test_the_zero_vector_is_no_augmentation():
    D = build_denoiser(ModelConfig(kind="image", in_shape=[3, 8, 8], preset="tiny", augment_dim=AUGMENT_DIM))
    torch.manual_seed(0)
    for w in D.net.parameters():  # some are zero at initialisation (the augmentation map among them), not after training
        torch.nn.init.normal_(w, std=0.2)
    x = images(4)
    with torch.no_grad():
        plain = D(x, 0.7)
        assert torch.equal(D(x, 0.7, augment_labels=torch.zeros(4, AUGMENT_DIM)), plain)
        assert not torch.allclose(D(x, 0.7, augment_labels=torch.ones(4, AUGMENT_DIM)), plain)


@pytest.mark.parametrize("mode", ["flip", "edm"])
def test_training_with_augmentation(tmp_path, mode, capsys):
    assert cli("train", "--data", "digits", "--out", tmp_path / "run", "--preset", "tiny", "--steps", 4,
               "--batch-size", 32, "--augment", mode, "--no-progress") == 0
    run = dk.load(tmp_path / "run")
    assert run.model_config.augment_dim == (AUGMENT_DIM if mode == "edm" else 0)
    s = run.sample(4, steps=3, label=2)
    assert s.shape == (4, 8, 8, 1) and np.isfinite(s).all()
    assert cli("train", "--data", "toy:moons:200", "--out", tmp_path / "t", "--augment", mode, "--steps", 1) != 0
    one_line_error(capsys, 1, "--augment", "images")
