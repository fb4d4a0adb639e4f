"""Load on `diffusekit serve`: POST /score (a table detector) and POST /sample with 1, 8 and 32 concurrent clients on
loopback. Per level: rows/s, p50 / p99 latency, errors; the server process's resident memory after warm-up and at
the end (it must not grow), and its peak. The baseline: `det.score` in-process on the same batches, one after the
other. Bounded: --requests per level, and --seconds per level at most.

    python benchmarks/speed/bench_serve.py --requests 60 --json benchmarks/results/serve.json
    python benchmarks/speed/bench_serve.py --requests 10000 --batch 1 --clients 32 --models 1 --seconds 3600 \
        --json benchmarks/results/serve_10k.json   # memory over 10,000 requests per path
"""
import argparse
import concurrent.futures as cf
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.datasets import load_breast_cancer

import diffusekit as dk


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(det_path):
    """`diffusekit serve DET --no-ui` on a free loopback port, once /health answers: (process, url, port)."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "diffusekit", "serve", str(det_path), "--no-ui", "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return server, url, port
        except httpx.TransportError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit("the server did not start")
        time.sleep(0.2)


def load_level(url, path, bodies, clients, seconds, pid, warmup):
    """POST each body (cycling) from `clients` threads until all are sent or time is up: figures of the level."""
    lat, errors, rows, rss_after_warmup, trace = [], 0, 0, None, []
    t0 = time.time()

    def one(body):
        with httpx.Client(base_url=url, timeout=120) as c:
            s = time.perf_counter()
            r = c.post(path, json=body)
            return time.perf_counter() - s, r.status_code, body

    with cf.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, b) for b in bodies]
        for i, f in enumerate(cf.as_completed(futures)):
            dt, status, body = f.result()
            lat.append(dt)
            errors += status != 200
            rows += len(body.get("rows", [])) or body.get("n", 0)
            if i + 1 == warmup:
                rss_after_warmup = rss_kb(pid)
            if (i + 1) % max(1, len(bodies) // 20) == 0:
                trace.append(round(rss_kb(pid) / 1024, 1))
            wall = time.time() - t0  # up to the last answer counted (requests still in flight at a stop are not)
            if wall > seconds:
                for g in futures:
                    g.cancel()
                break
    return {"clients": clients, "requests": len(lat), "errors": errors, "rows_per_s": rows / wall,
            "p50_ms": 1000 * float(np.percentile(lat, 50)), "p99_ms": 1000 * float(np.percentile(lat, 99)),
            "rss_after_warmup_mb": (rss_after_warmup or rss_kb(pid)) / 1024, "rss_end_mb": rss_kb(pid) / 1024,
            "rss_trace_mb": trace}


def in_process(det, batches, fpr, seconds):
    """Rows/s of det.score on the same batches, one after the other."""
    det.score(batches[0], fpr=fpr)
    t0, n = time.time(), 0
    for b in batches:
        det.score(b, fpr=fpr)
        n += 1
        if time.time() - t0 > seconds:
            break
    rate = n * len(batches[0]) / (time.time() - t0)
    print(f"in-process det.score: {rate:.1f} rows/s ({n} batches of {len(batches[0])})", flush=True)
    return rate


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--detector", help="a table detector folder (default: one fitted here on breast cancer's benign "
                                      "rows, 0.5 minutes)")
    p.add_argument("--models", type=int, help="networks in that detector (default: the detector's default)")
    p.add_argument("--requests", type=int, default=300, help="requests per level")
    p.add_argument("--batch", type=int, default=32, help="rows per /score request")
    p.add_argument("--sample-n", type=int, default=16, help="rows per /sample request")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    p.add_argument("--paths", nargs="+", default=["score", "sample"], choices=["score", "sample"])
    p.add_argument("--seconds", type=float, default=300, help="time limit per level")
    p.add_argument("--baseline-seconds", type=float, default=120, help="time limit of the in-process baseline")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()

    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns="target")
    det_path = a.detector
    if det_path is None:
        det_path = Path(tempfile.mkdtemp()) / "det"
        dk.AnomalyDetector.fit(df[data.target == 1], out=det_path, minutes=0.5, models=a.models)
    det = dk.AnomalyDetector.load(det_path)
    rng = np.random.default_rng(0)
    batches = [df.iloc[rng.integers(0, len(df), a.batch)] for _ in range(a.requests)]
    fpr = 0.1

    base = in_process(det, batches, fpr, a.baseline_seconds) if "score" in a.paths else None
    server, url, port = start_server(det_path)
    try:
        score_bodies = [{"rows": json.loads(b.to_json(orient="records")), "fpr": fpr} for b in batches]
        sample_bodies = [{"n": a.sample_n, "seed": i} for i in range(a.requests)]
        out = {"baseline_rows_per_s": base, "batch": a.batch, "requests_per_level": a.requests, "score": [],
               "sample": []}
        for key in a.paths:
            path, bodies = "/" + key, {"score": score_bodies, "sample": sample_bodies}[key]
            for clients in a.clients:
                r = load_level(url, path, bodies, clients, a.seconds, server.pid, warmup=max(1, len(bodies) // 10))
                out[key].append(r)
                print(f"{path} {clients:2d} clients: {r['rows_per_s']:.1f} rows/s, p50 {r['p50_ms']:.0f} ms, p99 "
                      f"{r['p99_ms']:.0f} ms, {r['errors']} errors / {r['requests']}, RSS {r['rss_after_warmup_mb']:.0f}"
                      f" -> {r['rss_end_mb']:.0f} MB", flush=True)
        out["server_peak_rss_mb"] = rss_kb(server.pid, "VmHWM") / 1024
        if out["score"]:
            out["score_over_in_process"] = out["score"][-1]["rows_per_s"] / base
            print(f"/score at {a.clients[-1]} clients / in-process: {out['score_over_in_process']:.3f}")
        print(f"server peak RSS {out['server_peak_rss_mb']:.0f} MB")
    finally:
        server.terminate()
        server.wait(30)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
