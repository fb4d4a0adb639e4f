"""Nothing lost, every writing command: killed at any moment, its output is absent or whole (issue 30). Apart from
test_crash.py so that the two long files run on different workers."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffusekit import load as load_run
from diffusekit.checkpoint import LOCK_FILE
from test_crash import CLI, ENV


def test_a_killed_anomaly_fit_leaves_no_detector_or_a_whole_one(tmp_path):
    """`anomaly fit` killed at moments spread over its run: detector.json is written last, so the folder holds either
    no detector (said plainly, and a retry into it is refused rather than mixing two fits) or one that scores."""
    rng = torch.Generator().manual_seed(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g).numpy()
    with open(tmp_path / "normal.csv", "w") as f:
        f.write("a,b,c\n" + "\n".join(",".join(f"{v:.5g}" for v in r) for r in x) + "\n")
    fit = [*CLI, "anomaly", "fit", "--data", str(tmp_path / "normal.csv"), "--steps", "300", "--models", "1",
           "--no-progress", "--out"]
    t = time.time()
    subprocess.run([*fit, str(tmp_path / "whole")], env=ENV, check=True, capture_output=True, timeout=300)
    took = time.time() - t
    outcomes = []
    for trial in range(5):  # kills spread from a fifth of an uninterrupted fit's time to just past its end
        det = tmp_path / f"det{trial}"
        p = subprocess.Popen([*fit, str(det)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(took * (0.2 + 0.2 * trial + 0.1 * float(torch.rand(1, generator=rng))))
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = subprocess.run([*CLI, "anomaly", "score", str(det), "--data", str(tmp_path / "normal.csv"), "--out",
                            str(tmp_path / f"s{trial}.csv"), "--no-progress"], env=ENV, capture_output=True, text=True,
                           timeout=300)
        if (det / "detector.json").exists():
            assert r.returncode == 0, r.stderr
            outcomes.append("whole")
        else:
            assert r.returncode != 0 and "Traceback" not in r.stderr
            assert "not a detector" in r.stderr or "no such" in r.stderr.lower(), r.stderr
            outcomes.append("none")
            if det.exists() and any(p.name != LOCK_FILE for p in det.iterdir()):
                again = subprocess.run([*CLI, "anomaly", "fit", "--data", str(tmp_path / "normal.csv"), "--out",
                                        str(det), "--steps", "5", "--no-progress"], env=ENV, capture_output=True,
                                       text=True, timeout=120)
                assert again.returncode != 0 and "did not finish" in again.stderr, again.stderr
    print("killed anomaly fits:", outcomes)


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    from diffusekit.checkpoint import write_text_atomic
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"out.csv.tmp-{int(dead.stdout)}"  # its writer was killed: nobody will finish it
    stale.write_text("half")
    other = tmp_path / f"out.csv.tmp-{os.getppid()}"  # a writer still running (this test's parent) keeps its file
    other.write_text("in progress")
    write_text_atomic(tmp_path / "out.csv", "a\n1\n")
    assert not stale.exists() and other.exists() and (tmp_path / "out.csv").read_text() == "a\n1\n"


def test_every_writing_command_killed_leaves_its_output_absent_or_whole(tmp_path):
    """Each command that writes files, SIGKILLed at a random moment of its run: its output is absent or whole (a
    streamed CSV may also leave OUT.partial, which --resume completes), and the next run of the command leaves
    nothing half-written behind."""
    import numpy as np

    from diffusekit.checkpoint import read_json

    toy, digits, rows = tmp_path / "toy", tmp_path / "digits", tmp_path / "rows.csv"
    for run, kw in ((toy, ["--data", "toy:gmm8", "--steps", "200"]),
                    (digits, ["--data", "digits", "--preset", "tiny", "--steps", "20", "--batch-size", "32"])):
        subprocess.run([*CLI, "train", "--out", str(run), *kw, "--no-progress"], env=ENV, check=True,
                       capture_output=True, timeout=300)
    g = np.random.default_rng(0)
    rows.write_text("x0,x1\n" + "\n".join(f"{a:.5f},{b:.5f}" for a, b in g.normal(0, 2, (4000, 2))) + "\n")
    o = lambda name: str(tmp_path / name)  # noqa: E731

    def lines(path):
        return len(Path(path).read_text().splitlines())

    writers = {  # command, its output, whether it streams, what a whole output is
        "sample .npz": ([*CLI, "sample", str(toy), "--n", "8000", "--out", o("s.npz")], o("s.npz"), False,
                        lambda p: np.load(p)["arr_0"].shape == (8000, 2)),
        "sample .csv": ([*CLI, "sample", str(toy), "--n", "25000", "--out", o("s.csv")], o("s.csv"), True,
                        lambda p: lines(p) == 25001),  # three chunks: a kill may leave one or two
        "encode .npz": ([*CLI, "encode", str(toy), "--data", str(rows), "--out", o("z.npz"), "--method", "ddim",
                         "--steps", "30"], o("z.npz"), False, lambda p: np.load(p)["latents"].shape == (4000, 2)),
        "encode .csv": ([*CLI, "encode", str(toy), "--data", str(rows), "--out", o("z.csv"), "--method", "ddim",
                         "--steps", "30"], o("z.csv"), True, lambda p: lines(p) == 4001),
        "nll --csv": ([*CLI, "nll", str(toy), "--data", str(rows), "--n", "0", "--method", "elbo", "--levels", "16",
                       "--csv", o("v.csv")], o("v.csv"), True, lambda p: lines(p) == 4001),
        "tune-steps": ([*CLI, "tune-steps", str(toy), "--steps", "4", "6", "--n", "128"], str(toy / "grids.json"),
                       False, lambda p: {"4", "6"} <= set(read_json(p)["grids"])),
        "export": ([*CLI, "export", str(digits), o("exp")], o("exp"), False,
                   lambda p: load_run(p, device="cpu").kind == "image"),
    }
    rng = torch.Generator().manual_seed(2)
    for name, (cmd, out, streams, whole) in writers.items():
        t = time.time()
        subprocess.run([*cmd, "--no-progress"] if name != "export" else cmd, env=ENV, check=True,
                       capture_output=True, timeout=300)
        took = time.time() - t
        print(f"{name}: {took:.1f} s")
        assert whole(out), name
        shutil.rmtree(out) if os.path.isdir(out) else os.remove(out)
        p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(took * (0.4 + 0.55 * float(torch.rand(1, generator=rng))))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not os.path.exists(out) or whole(out), name  # never a damaged output
        if not os.path.exists(out) or name != "export":  # export writes a new folder only
            again = [*cmd, "--resume"] if streams and os.path.exists(out + ".partial") else cmd
            r = subprocess.run(again, env=ENV, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and whole(out), (name, r.stderr[-500:])
        left = [str(q) for q in tmp_path.rglob("*") if ".tmp-" in q.name or q.name.endswith((".partial", ".partial.json"))]
        assert not left, (name, left)
