"""The server under load (issue 30): `diffusekit serve DETECTOR --no-ui` on loopback, held for --seconds by --clients
threads sending a mix of valid requests, malformed ones and clients that disconnect mid-request. Goal: zero failed
valid requests, every malformed one a 4xx with a message (never a 5xx), memory flat after warm-up, and the server
still answering at the end.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/robustness/serve_load.py --seconds 600 --clients 32

Mix per request (seeded): 70% valid POST /score (8 rows of breast cancer), 10% valid POST /sample (4 rows), 10%
malformed (not JSON, a missing column, a text fpr, rows not a list, a negative n), 10% disconnects (a raw socket sends
the headers and half of a valid body, then closes). The detector: one network fit for 30 s on breast cancer's benign
rows. Writes benchmarks/results/serve_load.json.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_breast_cancer

import diffusekit as dk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "speed"))
from bench_serve import rss_kb, start_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--clients", type=int, default=32)
    a = p.parse_args()
    data = load_breast_cancer(as_frame=True)
    df = data.frame.drop(columns="target")
    det = Path(tempfile.mkdtemp()) / "det"
    dk.AnomalyDetector.fit(df[data.target == 1], out=det, minutes=0.5, models=1)
    records = json.loads(df.to_json(orient="records"))
    server, url, port = start_server(det)
    counts = {k: 0 for k in ("valid", "valid_failed", "malformed", "malformed_4xx", "malformed_5xx", "disconnects")}
    failures, lock, trace = [], threading.Lock(), []
    try:
        bad_bodies = [b"{not json", json.dumps({"rows": [{k: v for k, v in records[0].items() if k != "mean radius"}]}),
                      json.dumps({"rows": records[:2], "fpr": "x"}), json.dumps({"rows": "abc"}),
                      ("/sample", json.dumps({"n": -3}))]
        stop = time.time() + a.seconds

        def client(k):
            rng = random.Random(k)
            with httpx.Client(base_url=url, timeout=300) as c:
                while time.time() < stop:
                    u = rng.random()
                    try:
                        if u < 0.8:
                            path, body = ("/score", {"rows": rng.sample(records, 8), "fpr": 0.1}) if u < 0.7 else \
                                ("/sample", {"n": 4, "seed": rng.randrange(10**6)})
                            r = c.post(path, json=body)
                            with lock:
                                counts["valid"] += 1
                                if r.status_code != 200:
                                    counts["valid_failed"] += 1
                                    failures.append(f"{path} {r.status_code} {r.text[:200]}")
                        elif u < 0.9:
                            bad = rng.choice(bad_bodies)
                            path, raw = bad if isinstance(bad, tuple) else ("/score", bad)
                            r = c.post(path, content=raw, headers={"content-type": "application/json"})
                            with lock:
                                counts["malformed"] += 1
                                counts["malformed_4xx"] += 400 <= r.status_code < 500 and "detail" in r.text
                                counts["malformed_5xx"] += r.status_code >= 500
                        else:
                            body = json.dumps({"rows": rng.sample(records, 8)}).encode()
                            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                                s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
                            with lock:
                                counts["disconnects"] += 1
                    except httpx.HTTPError as e:
                        with lock:
                            counts["valid_failed"] += u < 0.8
                            failures.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            trace.append((round(time.time() - t0), round(rss_kb(server.pid) / 1024, 1)))
            time.sleep(min(30, a.seconds / 20))
        for t in threads:
            t.join()
        alive = httpx.get(url + "/health", timeout=10).status_code == 200
        warm = [m for s, m in trace if s >= a.seconds / 10] or [trace[-1][1]]
        out = {"command": " ".join(sys.argv), "seconds": a.seconds, "clients": a.clients, **counts,
               "failures": failures[:20], "alive_at_end": alive, "rss_trace_mb": trace,
               "rss_after_warmup_mb": warm[0], "rss_end_mb": warm[-1], "server_peak_rss_mb": rss_kb(server.pid,
                                                                                                   "VmHWM") / 1024}
        print(json.dumps({k: v for k, v in out.items() if k != "rss_trace_mb"}, indent=1))
        (RESULTS / "serve_load.json").write_text(json.dumps(out, indent=1) + "\n")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
