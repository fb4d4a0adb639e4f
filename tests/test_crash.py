"""Nothing lost: one writer at a time, readers beside a training run, kills at any moment (issue 30)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffusekit import load as load_run
from diffusekit.checkpoint import LOCK_FILE, writer_lock
from diffusekit.errors import DiffusekitError

CLI = [sys.executable, "-m", "diffusekit"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_one_writer_at_a_time_in_a_folder(tmp_path):
    run = tmp_path / "run"
    with writer_lock(run, "train"):
        assert (run / LOCK_FILE).read_text().strip() == f"pid {os.getpid()} (train)"
        # a second writer (another open file, as another process has) is refused at once, naming the holder
        with pytest.raises(DiffusekitError, match=rf"is being written by pid {os.getpid()} \(train\); one writer"):
            with writer_lock(run, "anomaly fit"):
                pass
    with writer_lock(run, "again"):  # released when the block ends
        pass
    # refused before anything was written: the folder it made is gone again
    with pytest.raises(DiffusekitError, match="boom"):
        with writer_lock(tmp_path / "new", "train"):
            raise DiffusekitError("boom")
    assert not (tmp_path / "new").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DiffusekitError, match="existing file"):
        with writer_lock(tmp_path / "afile", "train"):
            pass
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir()
        os.chmod(tmp_path / "ro", 0o500)
        with pytest.raises(DiffusekitError, match="cannot write in"):
            with writer_lock(tmp_path / "ro", "train"):
                pass
    # a folder only read (the run a detector is fit on) is not locked where it cannot be written
    with writer_lock(tmp_path / "nowhere", "anomaly fit", reading=True):
        pass
    assert not (tmp_path / "nowhere").exists()


def _step(run) -> int:
    try:
        return json.loads((run / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_a_second_writer_is_refused_readers_read_and_a_kill_leaves_no_stuck_lock(tmp_path):
    run = tmp_path / "run"
    trainer = subprocess.Popen([*CLI, "train", "--data", "toy:gmm8", "--out", str(run), "--steps", "1000000",
                                "--ckpt-every", "10", "--no-progress"], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while _step(run) < 10:
            assert trainer.poll() is None, trainer.stderr.read()
            assert time.time() < deadline, "the trainer wrote no checkpoint in 2 minutes"
            time.sleep(0.2)
        held = f"being written by pid {trainer.pid} (train)"
        for cmd in (["train", "--data", "toy:gmm8", "--out", str(run), "--steps", "5"],
                    ["train", "--resume", "--out", str(run), "--steps", "5"],
                    ["anomaly", "fit", "--data", "toy:gmm8", "--run", str(run), "--out", str(tmp_path / "det")]):
            r = subprocess.run([*CLI, *cmd, "--no-progress"], env=ENV, capture_output=True, text=True, timeout=120)
            assert r.returncode != 0 and held in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "det").exists()
        # readers beside the writer (it replaces last/ every 10 steps): always a whole checkpoint, never older
        steps = []
        for _ in range(40):
            steps.append(load_run(run).step)
        assert steps == sorted(steps) and steps[-1] > steps[0] >= 10
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    # the kernel dropped the dead trainer's lock: a resume starts at once and finishes
    at = _step(run)
    r = subprocess.run([*CLI, "train", "--resume", "--out", str(run), "--steps", str(at + 20), "--no-progress"],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _step(run) == at + 20


# the trainer under a slowed checkpoint writer: it marks the window in which a kill lands mid-write
SLOW_WRITER = """
import sys, time, pathlib
import diffusekit.checkpoint as c
save = c.save_file
def slow(tensors, path, *a, **k):
    mark = pathlib.Path(sys.argv[1]) / "writing"
    mark.write_text(path)
    save(tensors, path, *a, **k)
    time.sleep(0.2)
    mark.unlink()
c.save_file = slow
from diffusekit.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("steps, kills, kw", [
    (1000, 20, ["--data", "toy:gmm8", "--ckpt-every", "25", "--batch-size", "64"]),
    # a class-conditional U-Net on images, its EMA and labels' dropout among what must come back
    (150, 6, ["--data", "digits", "--preset", "tiny", "--ckpt-every", "10", "--batch-size", "32"])], ids=["toy", "digits"])
def test_killed_at_any_moment_resumes_to_the_uninterrupted_weights(tmp_path, steps, kills, kw):
    """SIGKILL at random moments of a run's life, many of them while a checkpoint is being written; every resume
    starts, and the weights after the budget equal those of a run never interrupted, bit for bit. The moments are
    drawn after each process's first checkpoint write begins (its writes are slowed to 0.6 s), so that every process
    is killed before it finishes, whatever this machine's speed."""
    KILLS, kw = kills, [*kw, "--no-progress"]
    whole = tmp_path / "whole"
    subprocess.run([*CLI, "train", "--out", str(whole), "--steps", str(steps), *kw], env=ENV, check=True,
                   capture_output=True, timeout=300)
    run, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    rng = torch.Generator().manual_seed(0)
    kills = mid_write = resumes = 0
    while _step(run) < steps:
        first = not (run / "config.json").exists()
        args = [*kw, "--steps", str(steps)] if first else ["--resume", "--steps", str(steps), "--no-progress"]
        p = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(marks), "train", "--out", str(run), *args],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        resumes += not first
        t_kill = None
        while p.poll() is None and kills < KILLS:
            if t_kill is None and (marks / "writing").exists():
                t_kill = time.time() + 1.2 * float(torch.rand(1, generator=rng))  # up to two checkpoints on
            if t_kill is not None and time.time() >= t_kill:
                mid_write += (marks / "writing").exists()
                p.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        p.wait()
        (marks / "writing").unlink(missing_ok=True)
        err = p.stderr.read()
        assert p.returncode in (0, -signal.SIGKILL), err  # every start (and resume) worked
        assert resumes < 3 * KILLS, "no progress"
    assert kills == KILLS and mid_write >= KILLS // 4 and resumes >= KILLS - 1, (kills, mid_write, resumes)
    print(f"{kills} kills, {mid_write} during a checkpoint write, {resumes} resumes, all started")
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name or p.name.endswith(".old")]
    for stem in ("model", "ema", "optimizer"):
        a, b = load_file(whole / "last" / f"{stem}.safetensors"), load_file(run / "last" / f"{stem}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stem


def _file_size_limit(limit):
    def apply():  # a write past the limit then fails with EFBIG instead of killing the process (SIGXFSZ)
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_failing_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    kw = ["--no-progress"]
    subprocess.run([*CLI, "train", "--data", "toy:gmm8", "--out", str(run), "--steps", "20", "--ckpt-every", "10", *kw],
                   env=ENV,
                   check=True, capture_output=True, timeout=300)
    before = {p.name: p.read_bytes() for p in (run / "last").iterdir()}
    # files of at most 4 KiB: the log's rows fit, a checkpoint's weights do not (a full disk, as a process sees it)
    r = subprocess.run([*CLI, "train", "--resume", "--out", str(run), "--steps", "40", *kw], env=ENV,
                       capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4096))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot write the checkpoint" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in (run / "last").iterdir()} == before
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name or p.name.endswith(".old")]
    # room again: the resume goes on from the intact checkpoint
    subprocess.run([*CLI, "train", "--resume", "--out", str(run), "--steps", "40", *kw], env=ENV, check=True,
                   capture_output=True, timeout=300)
    assert _step(run) == 40
    # a scores file that cannot be written: said in one line, nothing half-written beside it
    subprocess.run([*CLI, "sample", str(run), "--n", "50", "--out", str(tmp_path / "ok.csv"), "--no-progress"], env=ENV, check=True,
                   capture_output=True, timeout=300)
    r = subprocess.run([*CLI, "sample", str(run), "--n", "5000", "--out", str(tmp_path / "big.csv"), "--no-progress"], env=ENV,
                       capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(4096))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not [p.name for p in tmp_path.iterdir() if "big.csv" in p.name]
    # rows written as they are drawn: the disk fills in the second chunk; the first is kept, a resume completes the file
    many = [*CLI, "sample", str(run), "--n", "15000", "--no-progress"]
    r = subprocess.run([*many, "--out", str(tmp_path / "many.csv")], env=ENV, capture_output=True, text=True,
                       timeout=300, preexec_fn=_file_size_limit(450_000))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "10000 rows are done" in r.stderr and "--resume" in r.stderr
    subprocess.run([*many, "--out", str(tmp_path / "many.csv"), "--resume"], env=ENV, check=True, timeout=300)
    subprocess.run([*many, "--out", str(tmp_path / "straight.csv")], env=ENV, check=True, timeout=300)
    assert (tmp_path / "many.csv").read_text() == (tmp_path / "straight.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if "many" in p.name) == ["many.csv"]


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def test_torchrun_with_one_rank_killed_resumes_to_the_uninterrupted_weights(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "diffusekit",
                "train"]
    kw = ["--data", "toy:moons", "--preset", "tiny", "--batch-size", "64", "--steps", "1000", "--ckpt-every", "10",
          "--no-progress"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    r = subprocess.run([*torchrun, "--out", str(whole), *kw], env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    agent = subprocess.Popen([*torchrun, "--out", str(run), *kw], env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _step(run) < 30:
        assert agent.poll() is None and time.time() < deadline, agent.stderr.read()[-2000:]
        time.sleep(0.1)
    workers = _children(agent.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)  # rank 1 (the one that does not write) dies mid-run
    agent.wait(timeout=300)
    agent.stderr.read()
    assert agent.returncode != 0 and _step(run) < 1000
    r = subprocess.run([*torchrun, "--out", str(run), "--resume", "--steps", "1000", "--no-progress"], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for stem in ("model", "ema", "optimizer"):
        a, b = load_file(whole / "last" / f"{stem}.safetensors"), load_file(run / "last" / f"{stem}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), stem
