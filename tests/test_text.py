"""Text (issue 31): the character codec, masked diffusion's bound on a source of known entropy, the unmasking
sampler's temperature, and train -> sample -> nll through the command line."""
import json

import numpy as np
import pytest
import torch

from diffusekit.data import load_data
from diffusekit.data.text import PAD, UNK, TextCodec
from diffusekit.errors import DiffusekitError
from diffusekit.masked import MaskedDiffusionLoss, masked_nll, sample_tokens
from test_cli import cli, one_line_error


def test_the_codec_round_trips_and_refuses_what_it_cannot_read(tmp_path):
    doc = "Über die Brücke, naïve café: “quotes” — and\ttabs.\n" * 8
    (tmp_path / "doc.txt").write_text(doc, encoding="utf-8")
    d = load_data(f"text:{tmp_path / 'doc.txt'}:16")
    assert d.x.shape == (len(doc) // 16, 16) and d.x.dtype == torch.long
    assert "".join(d.codec.decode(d.x)) == doc[:len(doc) // 16 * 16]  # windows of the document, every character
    c = TextCodec.from_dict(json.loads(json.dumps(d.codec.to_dict())))
    assert torch.equal(c.encode(d.codec.decode(d.x)), d.x)
    (tmp_path / "log.txt").write_text("GET /a 200\n\nPOST /login 302\nGET /b 404\n")
    lines = load_data(f"lines:{tmp_path / 'log.txt'}")
    assert lines.codec.length == 15 and lines.codec.decode(lines.x) == ["GET /a 200", "POST /login 302", "GET /b 404"]
    assert (lines.x[0, 10:] == PAD).all() and lines.codec.never == [UNK]
    unseen = []
    assert lines.codec.encode(["GET /z 200"], unseen)[0, 5] == UNK and unseen == [(0, 5, "z")]
    with pytest.raises(DiffusekitError, match="never had"):
        lines.codec.encode(["GET /z 200"])
    with pytest.raises(DiffusekitError, match="at most 15"):
        lines.codec.encode(["GET /index.html 200"])
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for spec, needle in ((f"text:{tmp_path / 'empty.txt'}", "holds no text"),
                         (f"lines:{tmp_path / 'bin.txt'}", "binary file"),
                         (f"text:{tmp_path / 'latin1.txt'}:2", "not UTF-8"),
                         (f"text:{tmp_path / 'log.txt'}:500", "fewer than one window"),
                         (f"lines:{tmp_path / 'log.txt'}:12", "line 2 has 15 characters"),
                         (f"text:{tmp_path / 'missing.txt'}", "cannot read")):
        with pytest.raises(DiffusekitError, match=needle):
            load_data(spec)


class IID(torch.nn.Module):
    """The exact denoiser of a source of independent tokens with probabilities p: every position's p, whatever the
    masks."""

    def __init__(self, p):
        super().__init__()
        self.logp, self.mask = p.log(), len(p)

    def forward(self, z, labels=None):
        return self.logp.expand(*z.shape, len(self.logp))


def test_the_bound_of_the_exact_denoiser_is_the_entropy_of_a_known_source():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125])  # entropy 1.75 bits a token
    g = torch.Generator().manual_seed(0)
    x = torch.multinomial(p, 64 * 4000, replacement=True, generator=g).reshape(4000, 64)
    D, truth = IID(p), -p.log()[x].sum(1)  # -log p(x) of each sequence, nats
    loss = MaskedDiffusionLoss()
    t, u = loss.draw(x.shape, g)
    per_token = loss(D, x, None, t, u)  # the training objective: an unbiased estimate of the bound per token
    se = float(per_token.std()) / np.sqrt(len(x))
    assert abs(float(per_token.mean()) - float(truth.mean()) / 64) < 4 * se
    bound = masked_nll(D, x[:500], 8, seeds=list(range(500)))  # stratified levels: the same bound, per sequence
    assert abs(float(bound.mean() - truth[:500].mean())) < 0.01 * float(truth[:500].mean())
    # a wrong weighting would miss: without 1 / t the objective is half the entropy
    assert float((per_token * t).mean()) < 0.6 * float(truth.mean()) / 64


def test_temperature_scales_the_gumbel_draws():
    p = torch.tensor([0.6, 0.3, 0.1])
    D = IID(p)
    z = torch.full((400, 6), 3)
    seeds = list(range(400))
    one = sample_tokens(D, z, 3, seeds=seeds)
    again = torch.cat([sample_tokens(D, z[:150], 3, seeds=seeds[:150]), sample_tokens(D, z[150:], 3, seeds=seeds[150:])])
    assert torch.equal(one, again)  # a sample's draws are its own, whatever the batch
    freq = torch.bincount(one.flatten(), minlength=3).double() / one.numel()
    assert torch.allclose(freq, p.double(), atol=0.03)  # temperature 1: the model's distribution
    cold = torch.bincount(sample_tokens(D, z, 3, seeds=seeds, temperature=0.5).flatten(), minlength=3).double()
    sharp = p ** 2 / (p ** 2).sum()  # softmax(logits / 0.5)
    assert torch.allclose(cold / cold.sum(), sharp.double(), atol=0.03)
    zero = sample_tokens(D, z, 2, seeds=seeds, temperature=0)
    assert (zero == 0).all() and torch.equal(zero, sample_tokens(D, z, 5, seeds=[7] * 400, temperature=0))
    # infilling: given tokens stay; every mask is filled, in the steps asked for
    part = torch.tensor([[1, 3, 2, 3, 3, 0]])
    steps = []
    out = sample_tokens(D, part, 3, seeds=[0], callback=lambda s: steps.append(int((s["tokens"] == 3).sum())))
    assert out[0, 0] == 1 and out[0, 2] == 2 and out[0, 5] == 0 and (out != 3).all() and steps == [2, 1, 0]


def test_a_text_run_without_positions_in_its_config_keeps_the_learned_ones_it_was_trained_with():
    from diffusekit.model import ModelConfig, build_denoiser

    old = build_denoiser(ModelConfig(kind="text", in_shape=[8], preset="tiny", vocab=5)).net
    new = build_denoiser(ModelConfig(kind="text", in_shape=[8], preset="tiny", vocab=5,
                                     overrides={"positions": "rotary"})).net
    assert "pos" in dict(old.named_parameters()) and "pos" not in dict(new.named_parameters())
    assert "blocks.layers.0.self_attn.in_proj_weight" in old.state_dict() and "blocks.0.qkv.weight" in new.state_dict()


def test_train_sample_and_nll_of_text_through_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and the dog ran".split()
    (tmp_path / "c.txt").write_text(" ".join(rng.choice(words, 3000)))
    run = tmp_path / "run"
    assert cli("train", "--data", f"text:{tmp_path / 'c.txt'}:24", "--out", run, "--preset", "tiny", "--steps", 30,
               "--batch-size", 16, "--no-progress") == 0
    assert (run / "samples" / "step_0000030.txt").exists()
    assert json.loads((run / "config.json").read_text())["model"]["overrides"] == {"positions": "rotary"}
    capsys.readouterr()
    assert cli("sample", run, "--n", 4, "--out", tmp_path / "s.txt", "--steps", 6, "--seed", 3, "--no-progress") == 0
    assert "unmasking, 6 steps" in capsys.readouterr().out
    s = (tmp_path / "s.txt").read_text().splitlines()
    assert len(s) == 4 and all(len(t) == 24 for t in s)
    assert cli("sample", run, "--n", 4, "--out", tmp_path / "s2.jsonl", "--steps", 6, "--seed", 3,
               "--no-progress") == 0
    assert [json.loads(t) for t in (tmp_path / "s2.jsonl").read_text().splitlines()] == s  # per-sample seeds
    capsys.readouterr()
    assert cli("nll", run, "--data", f"text:{tmp_path / 'c.txt'}", "--n", 20, "--levels", 4, "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 20 and r["dims"] == 24 and r["units"].startswith("characters") and r["elbo"]["bits_per_dim"] > 0
    e = one_line_error
    e(capsys, cli("nll", run, "--data", f"text:{tmp_path / 'c.txt'}", "--method", "ode"), "--method elbo")
    e(capsys, cli("sample", run, "--n", 2, "--out", tmp_path / "s.npz"), ".txt or .jsonl")
    e(capsys, cli("sample", run, "--n", 2, "--out", tmp_path / "s3.txt", "--sampler", "heun"), "unmasking")
    (tmp_path / "new.txt").write_text("the zebra\n")
    e(capsys, cli("nll", run, "--data", tmp_path / "new.txt"), "never had")
    # the Gaussian tasks say what text takes instead
    for args in (("encode", run, "--data", f"text:{tmp_path / 'c.txt'}", "--out", tmp_path / "z.npz"),
                 ("tune-steps", run, "--steps", 4), ("export", run, tmp_path / "exp"),
                 ("distill", run, "--out", tmp_path / "d", "--steps", 2),
                 ("evaluate", tmp_path / "s.txt", "--reference", f"text:{tmp_path / 'c.txt'}:24")):
        e(capsys, cli(*args), "text")
    assert not (tmp_path / "z.npz").exists() and not (tmp_path / "exp").exists() and not (tmp_path / "d").exists()
    # infilling: the marked characters filled, the others kept
    (tmp_path / "holes.txt").write_text("the c_t sat\non a __t\n")
    assert cli("infill", run, "--data", tmp_path / "holes.txt", "--out", tmp_path / "filled.txt", "--no-progress") == 0
    filled = (tmp_path / "filled.txt").read_text().splitlines()
    assert [len(t) for t in filled] == [11, 8] and filled[0][:5] == "the c" and filled[0][6:] == "t sat"
    assert filled[1][:5] == "on a " and "_" not in "".join(filled) and set("".join(filled)) <= set("the catsondgrm ")
    (tmp_path / "whole.txt").write_text("the cat\n")
    e(capsys, cli("infill", run, "--data", tmp_path / "whole.txt", "--out", tmp_path / "f.txt"), "nothing to fill")


def test_anomalous_lines_are_flagged_with_the_characters_least_expected(tmp_path, capsys):
    import pandas as pd

    rng = np.random.default_rng(1)
    paths = ["/index.html", "/login", "/static/app.js", "/api/items", "/about"]

    def line():
        return f"{rng.choice(['GET', 'GET', 'POST'])} {rng.choice(paths)} {rng.choice([200, 200, 302, 404])}"

    (tmp_path / "normal.log").write_text("\n".join(line() for _ in range(600)) + "\n")
    odd = ["GET /index.html 200 200 200 200", "POST /etc/passwd 200", "GET /login?id=1 OR 1=1 200"]
    (tmp_path / "test.log").write_text("\n".join([line() for _ in range(30)] + odd) + "\n")
    det = tmp_path / "det"
    assert cli("anomaly", "fit", "--data", f"lines:{tmp_path / 'normal.log'}:40", "--out", det, "--steps", 150,
               "--preset", "tiny", "--no-progress") == 0
    assert cli("anomaly", "score", det, "--data", tmp_path / "test.log", "--out", tmp_path / "s.csv", "--fpr", 0.05,
               "--no-progress") == 0
    s = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert {"least_expected", "unseen_characters"} <= set(s.columns)
    assert s["score"][30:].min() > s["score"][:30].max()  # each odd line above every normal one
    assert s["flag_at_fpr_0.05"][30:].all() and s["flag_at_fpr_0.05"][:30].sum() <= 4
    assert "'?'" in s["unseen_characters"][32] and s["unseen_characters"][30] == ""
    one_line_error(capsys, cli("anomaly", "fit", "--data", f"text:{tmp_path / 'normal.log'}:16", "--out",
                               tmp_path / "d2", "--steps", 5), "lines:FILE")


def test_text_trains_under_torchrun_as_in_one_process(tmp_path):
    import subprocess
    import sys

    from safetensors.torch import load_file

    (tmp_path / "c.txt").write_text("the cat sat on the mat and the dog ran off " * 40)
    args = ["train", "--data", f"text:{tmp_path / 'c.txt'}:16", "--preset", "tiny", "--steps", "12", "--batch-size",
            "8", "--sample-every", "0", "--no-progress", "--out"]
    assert cli(*args, tmp_path / "one") == 0
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "diffusekit", *args, str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = (load_file(tmp_path / d / "last" / "model.safetensors") for d in ("one", "two"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)  # the gradients' all-reduce rounds, nothing more
