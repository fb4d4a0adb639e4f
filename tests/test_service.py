"""`diffusekit serve`: the handlers called directly, then a real server on a loopback port driven over HTTP (every bad
request a 4xx with a message, the server answering afterwards). The page in a real browser: tests/test_app.py."""
import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from sklearn.datasets import load_digits, load_wine

import diffusekit as dk
from diffusekit.service import Limits, MainThreadWorker, Service, create_app, decode_images, encode_png

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny conditional digits run, and a table detector on the wine rows of classes 0 and 1."""
    d = tmp_path_factory.mktemp("serve")
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    run = dk.train(images, out=d / "run", labels=digits.target, steps=20, preset="tiny", batch_size=32,
                   progress=False)
    wine = load_wine(as_frame=True)
    df = wine.frame.iloc[:, :5]
    det = dk.AnomalyDetector.fit(df[wine.target < 2], out=d / "det", steps=20, models=1, preset="tiny")
    return run, det, df, wine.target.to_numpy(), images


def png(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ----- the handlers ------------------------------------------------------------------------------------------------

def test_handlers_sample_score_nll(models):
    run, det, df, _, images = models
    s = Service(run)
    out = s.sample({"n": 3, "steps": 4, "seed": 2, "label": "7"})
    assert out["labels"] == [7, 7, 7] and len(out["images"]) == 3
    got = decode_images(out["images"], 1)
    assert np.array_equal(got, run.sample(3, steps=4, seed=2, label=7))  # PNG is lossless
    assert s.health()["data"] == "image" and s.health()["classes"][7] == "7"
    nll = s.nll({"images": [png(im) for im in images[:2]], "method": "elbo"})
    assert len(nll["bits_per_dim"]) == 2 and np.allclose(nll["bits_per_dim"],
                                                         run.nll(images[:2], method="elbo").bits_per_dim)
    d = Service(det)
    rows = df.iloc[:4].to_dict(orient="records")
    answer = d.score({"rows": rows, "fpr": 0.1})
    want = det.score(df.iloc[:4], fpr=0.1)
    assert [i["score"] for i in answer["items"]] == pytest.approx(list(want["score"]))
    assert [i["flag"] for i in answer["items"]] == list(want["flag"])
    assert answer["fpr"] == 0.1 and "fpr_note" not in answer
    low = d.score({"rows": rows, "fpr": 1e-6})  # below what the calibration set supports: flags at its lowest rate
    n_cal = det.info["n_calibration"]
    assert low["fpr"] == 1 / (n_cal + 1) and f"has {n_cal}" in low["fpr_note"]
    assert [i["score"] for i in low["items"]] == pytest.approx(list(want["score"]))
    assert list(d.sample({"n": 2, "steps": 3})["rows"][0]) == list(df.columns)


@pytest.mark.parametrize("body,needle", [
    ({"n": 0}, "n must be"), ({"n": 10_000}, "n must be"), ({"n": 2, "temperature": "hot"}, "temperature must be"),
    ({"n": 2, "callback": 1}, "unknown option"), ({"n": 2, "sampler": "nope"}, "sampler must be one of"),
    ({"n": 2, "label": "11"}, "label must be"), ({"n": 2, "steps": [1]}, "steps must be"),
])
def test_handlers_refuse_bad_sample_requests(models, body, needle):
    with pytest.raises(dk.DiffusekitError, match=needle):
        Service(models[0], Limits(max_samples=64)).sample(body)


def test_handlers_refuse_bad_items(models):
    run, det, df, _, images = models
    s, d = Service(run), Service(det)
    for body, needle in (({"images": ["bm90IGFuIGltYWdl"]}, r"images\[0\] is not"), ({"rows": []}, "send 'images'"),
                         ({"images": [png(images[0]), png(np.zeros((4, 4), np.uint8))]}, "different sizes"),
                         ({"images": [png(np.zeros((4, 4), np.uint8))]}, "shape")):
        with pytest.raises(dk.DiffusekitError, match=needle):
            s.nll(body)
    with pytest.raises(dk.DiffusekitError, match="not a detector"):
        s.score({"images": [png(images[0])]})
    for body, needle in (({"rows": [{"x": 1}], "fpr": 0.1}, "columns differ"), ({"rows": "abc"}, "must be a list"),
                         ({"rows": [1, 2]}, "objects"), ({"rows": df.iloc[:2].to_dict("records"), "fpr": "x"}, "fpr"),
                         ({"rows": df.iloc[:2].to_dict("records"), "path": "/etc"}, "unknown option")):
        with pytest.raises(dk.DiffusekitError, match=needle):
            d.score(body)


def test_encode_png_round_trip():
    a = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert np.array_equal(decode_images([encode_png(a)], 3)[0], a)
    assert np.array_equal(decode_images(["data:image/png;base64," + encode_png(a[..., :1])], 1)[0], a[..., :1])


# ----- a real server on loopback -------------------------------------------------------------------------------------

@contextlib.contextmanager
def serving(target, **kw):
    """create_app(target) served by uvicorn on a free 127.0.0.1 port, in a thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(target, **kw), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_server_over_http(models):
    run, det, df, target, _ = models
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(det, token=TOKEN, ui=False, limits=Limits(max_body=200_000, max_items=500)) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health").json()["type"] == "detector"  # open: a liveness probe needs no token
        rows = df.to_dict(orient="records")
        r = c.post("/score", json={"rows": rows, "fpr": 0.1}, headers=auth)
        assert r.status_code == 200
        want = det.score(df, fpr=0.1)
        assert [i["score"] for i in r.json()["items"]] == pytest.approx(list(want["score"]))
        assert "openapi" in c.get("/openapi.json").json() and "/score" in c.get("/docs").text
        bad = [
            (dict(json={"rows": rows}), 401, "bearer token"),  # no token
            (dict(json={"rows": rows}, headers={"Authorization": "Bearer wrong"}), 401, "bearer token"),
            (dict(content=b"{not json", headers={**auth, "Content-Type": "application/json"}), 422, ""),
            (dict(json=[1, 2], headers=auth), 422, ""),
            (dict(json={"rows": rows * 3}, headers=auth), 400, "1-500 items"),
            (dict(content=b"x" * 300_000, headers={**auth, "Content-Type": "application/json"}), 413, "over 200000"),
            (dict(json={"rows": [{"alcohol": "a lot"}], "fpr": 0.1}, headers=auth), 400, "columns differ"),
            (dict(json={"images": ["AAAA"]}, headers=auth), 400, "send 'rows'"),
            (dict(json={"rows": rows[:3], "fpr": 2}, headers=auth), 400, "fpr"),
        ]
        for kw, status, needle in bad:
            r = c.post("/score", **kw)
            assert r.status_code == status, (kw, r.text)
            assert needle in r.json()["detail"] if needle else r.json()["detail"]
            assert c.get("/health").status_code == 200  # still serving
        r = c.post("/sample", json={"n": 4, "steps": 3, "seed": 1}, headers=auth)
        assert r.status_code == 200 and len(r.json()["rows"]) == 4
        assert c.post("/sample", json={"n": 4, "steps": "many"}, headers=auth).status_code == 400
        assert c.get("/nothing").status_code == 404


def test_server_images_and_the_page_route(models):
    run, *_, images = models
    with serving(run) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/sample", json={"n": 2, "steps": 3, "label": 4})
        assert r.status_code == 200 and r.json()["labels"] == [4, 4]
        r = c.post("/nll", json={"images": [png(im) for im in images[:2]], "method": "elbo"})
        assert r.status_code == 200 and len(r.json()["bits_per_dim"]) == 2
        assert c.post("/score", json={"images": [png(images[0])]}).status_code == 400
        assert c.get("/", follow_redirects=True).status_code == 200  # the page
        assert "gradio" in c.get("/ui/").text.lower()


def test_main_thread_worker_runs_calls_here_in_order():
    worker = MainThreadWorker()
    here, seen = threading.get_ident(), []
    futures = [worker.submit(lambda i=i: seen.append((i, threading.get_ident())) or i) for i in range(3)]
    bad = worker.submit(lambda: 1 / 0)
    worker.work_until(lambda: all(f.done() for f in futures + [bad]))
    assert [f.result() for f in futures] == [0, 1, 2] and seen == [(i, here) for i in range(3)]
    with pytest.raises(ZeroDivisionError):
        bad.result()


def test_diffusekit_serve_process(models, tmp_path):
    """The command itself: model calls on its main thread, HTTP beside them; Ctrl-C stops it; a port in use is said."""
    _, det, df, _, _ = models
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "diffusekit", "serve", str(det.path), "--no-ui", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else "no start"
            time.sleep(0.2)
        rows = df.iloc[:3].to_dict(orient="records")
        r = httpx.post(f"http://127.0.0.1:{port}/score", json={"rows": rows, "fpr": 0.5}, timeout=60)
        assert r.status_code == 200
        np.testing.assert_allclose([i["score"] for i in r.json()["items"]], det.score(df.iloc[:3], fpr=0.5)["score"],
                                   rtol=1e-6)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)  # the port is taken
        assert second.returncode != 0 and "could not listen on 127.0.0.1" in second.stderr.strip().splitlines()[-1]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    """A tiny masked-diffusion run on a repeated sentence (windows of 16) and a detector on web-server log lines."""
    tmp = tmp_path_factory.mktemp("text")
    (tmp / "c.txt").write_text("the cat sat on the mat and the dog ran off " * 30)
    run = dk.train(f"text:{tmp / 'c.txt'}:16", out=tmp / "run", steps=10, preset="tiny", batch_size=16,
                   progress=False)
    lines = [f"GET /{p} {s}" for p, s in zip(["a", "bb", "login", "x"] * 60, [200, 404, 302] * 80)]
    (tmp / "normal.log").write_text("\n".join(lines) + "\n")
    det = dk.AnomalyDetector.fit(f"lines:{tmp / 'normal.log'}:24", out=tmp / "det", steps=20, preset="tiny")
    return run, det


def test_server_text_and_lines(text_models):
    run, det = text_models
    with serving(run) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/docs").status_code == 200
        r = c.post("/sample", json={"n": 3, "steps": 4, "seed": 1})
        assert r.status_code == 200 and r.json()["texts"] == run.sample(3, steps=4, seed=1)
        r = c.post("/nll", json={"texts": ["the cat sat on t", "he mat and the d"], "levels": 4})
        assert r.status_code == 200 and len(r.json()["bits_per_dim"]) == 2 and r.json()["mean_bits_per_dim"] > 0
        for body, needle in (({"rows": [{"a": 1}]}, "send 'texts'"), ({"texts": [1, 2]}, "strings"),
                             ({"texts": ["short"]}, "windows of 16"), ({"texts": ["the cat sat on \u00e9"]}, "never had")):
            r = c.post("/nll", json=body)
            assert r.status_code == 400 and needle in r.json()["detail"], (body, r.text)
    with serving(det, ui=False) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/score", json={"texts": ["GET /a 200", "GET /a?id=1 OR 1=1 200"], "fpr": 0.1})
        items = r.json()["items"]
        assert r.status_code == 200 and items[1]["score"] > items[0]["score"] and "'?'" in items[1]["unseen_characters"]
        assert items[0]["least_expected"].count(";") == 2
