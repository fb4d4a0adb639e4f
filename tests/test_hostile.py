"""Hostile files (issue 30): every reader answers damaged, lying or odd input with a DiffusekitError (one line at the
CLI), never another exception, a hang or a crash. Property-based (hypothesis) where the input space is wide."""
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from diffusekit import load as load_run
from diffusekit.checkpoint import load_checkpoint
from diffusekit.data import csv_chunks, load_data
from diffusekit.detector import AnomalyDetector
from diffusekit.errors import DiffusekitError

SRC = Path(__file__).resolve().parent.parent / "src" / "diffusekit"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read_or_refuse(fn, *args):
    """fn(*args) succeeds or raises DiffusekitError; anything else fails the test."""
    try:
        return fn(*args)
    except DiffusekitError as e:
        assert str(e) and "\n" not in str(e).strip(), str(e)
        return None


def test_the_code_never_unpickles():
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"\bimport pickle\b|\bpickle\.|allow_pickle\s*=\s*True", text), f
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (f, call)


cell = st.one_of(st.text(max_size=12), st.sampled_from(["", "NA", "1e308", "-inf", "nan", "2024-02-30", '"', "1,5",
                                                         "\ufeff", "0x1F", "1_000", " 3 ", "\x00"]),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str))


@FUZZ
@given(st.lists(st.lists(cell, min_size=1, max_size=5), min_size=0, max_size=8), st.sampled_from(["utf-8", "utf-8-sig",
                                                                                                   "latin-1", "utf-16"]))
def test_csv_of_any_cells_is_read_or_refused(tmp_path, rows, encoding):
    path = tmp_path / "t.csv"
    buf = io.StringIO()
    import csv
    csv.writer(buf).writerows(rows)
    try:
        path.write_bytes(buf.getvalue().encode(encoding))
    except UnicodeEncodeError:
        return
    data = _read_or_refuse(load_data, str(path))
    if data is not None:
        assert np.isfinite(data.x.numpy()).all()
    _read_or_refuse(lambda: list(csv_chunks(str(path), 3)))


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8")),
                 st.text(max_size=300).map(lambda t: t.encode("utf-16"))),
       st.sampled_from(["text:{}", "text:{}:4", "lines:{}", "lines:{}:6", "text:{}:0", "lines:{}:99999"]))
def test_text_files_of_any_bytes_are_read_or_refused(tmp_path, raw, spec):
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    data = _read_or_refuse(load_data, spec.format(path))
    if data is not None:  # what was read decodes back to the file's own characters
        assert data.x.dtype == torch.long and set("".join(data.codec.decode(data.x))) <= set(path.read_text("utf-8-sig"))


def test_csv_huge_fields_and_many_columns(tmp_path):
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(10_000)) + "\n"
                                       + ",".join("1" for _ in range(10_000)) + "\n")
    assert _read_or_refuse(load_data, str(tmp_path / "wide.csv")) is not None
    (tmp_path / "huge.csv").write_text("a,b\n1," + "x" * 300_000 + "\n")
    with pytest.raises(DiffusekitError):
        load_data(str(tmp_path / "huge.csv"))


@FUZZ
@given(st.sampled_from(["object", "str", "complex", "bool", "float16", "uint64", "datetime", "empty", "3d", "nan"]))
def test_npz_of_odd_arrays_is_read_or_refused(tmp_path, kind):
    a = {"object": np.array([{"a": 1}, None], dtype=object), "str": np.array([["a", "b"]]),
         "complex": np.ones((4, 2), np.complex64), "bool": np.ones((4, 2), bool), "float16": np.ones((4, 2), np.float16),
         "uint64": np.full((4, 2), 2**63, np.uint64), "datetime": np.array(["2024-01-01"], "datetime64[D]"),
         "empty": np.zeros((0, 3)), "3d": np.zeros((2, 3, 4, 5, 6)), "nan": np.full((4, 2), np.nan)}[kind]
    path = tmp_path / "a.npz"
    np.savez(path, arr_0=a)  # an object array is written with pickles: the reader must not unpickle it
    _read_or_refuse(load_data, str(path))


def test_npz_zip_bomb_and_not_a_zip(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:  # a header declaring 8 TB, over a few zero bytes
        with z.open("arr_0.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
            f.write(bytes(1 << 20))
    with pytest.raises(DiffusekitError, match="declares 7450.6 GiB"):
        load_data(str(path))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DiffusekitError):
        load_data(str(tmp_path / "junk.npz"))


def test_damaged_images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "ok.png")
    good = (folder / "ok.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DiffusekitError):
        load_data(str(folder))
    (folder / "cut.png").unlink()
    # a PNG header that claims 100,000 x 100,000 pixels (a decompression bomb)
    bomb = bytearray(good)
    bomb[16:24] = (100_000).to_bytes(4, "big") * 2
    (folder / "bomb.png").write_bytes(bytes(bomb))
    with pytest.raises(DiffusekitError):
        load_data(str(folder))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import diffusekit as dk
    d = tmp_path_factory.mktemp("hostile")
    dk.train("toy:gmm8", out=d / "run", steps=2, progress=False)
    return d / "run"


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)


@FUZZ
@given(st.sampled_from(["config.json", "last/state.json"]), st.one_of(json_value, st.sampled_from(["deep", "huge"])),
       st.sampled_from(["replace", "merge"]))
def test_run_json_files_of_any_content_are_refused_or_read(tiny_run, tmp_path, name, value, how):
    import shutil
    run = tmp_path / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(tiny_run, run)
    if value == "deep":
        text = "[" * 100_000 + "]" * 100_000
    elif value == "huge":
        text = json.dumps({**json.loads((run / name).read_text()), "step": 10 ** 400})
    elif how == "merge" and isinstance(value, dict):
        text = json.dumps({**json.loads((run / name).read_text()), **value})
    else:
        text = json.dumps(value)
    (run / name).write_text(text)
    _read_or_refuse(load_run, run)


@FUZZ
@given(st.integers(0, 2000), st.binary(max_size=64), st.sampled_from(["cut", "overwrite", "header"]))
def test_damaged_safetensors_are_refused(tiny_run, tmp_path, at, junk, how):
    import shutil
    ck = tmp_path / "last"
    shutil.rmtree(ck, ignore_errors=True)
    shutil.copytree(tiny_run / "last", ck)
    f = ck / "ema.safetensors"
    raw = bytearray(f.read_bytes())
    if how == "cut":
        raw = raw[:at % len(raw)]
    elif how == "overwrite":
        raw[at % len(raw): at % len(raw) + len(junk)] = junk
    else:  # a header length that lies
        raw[:8] = (int.from_bytes(junk[:8].ljust(8, b"\xff"), "little")).to_bytes(8, "little")
    f.write_bytes(bytes(raw))
    _read_or_refuse(load_checkpoint, ck)


@FUZZ
@given(json_value)
def test_detector_json_of_any_content_is_refused(tmp_path, value):
    d = tmp_path / "det"
    d.mkdir(exist_ok=True)
    (d / "detector.json").write_text(json.dumps(value))
    assert _read_or_refuse(AnomalyDetector.load, d) is None


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-det")
    g = np.random.default_rng(0)
    rows = [f"{a:.4g},{b:.4g},{c}" for a, b, c in zip(g.normal(size=200), g.normal(size=200), g.choice(["x", "y"], 200))]
    (d / "normal.csv").write_text("a,b,c\n" + "\n".join(rows) + "\n")
    return AnomalyDetector.fit(d / "normal.csv", d / "det", steps=2, models=1)


@FUZZ
@given(st.lists(st.tuples(cell, cell, cell), min_size=1, max_size=6), st.booleans())
def test_rows_of_any_cells_are_scored_or_refused(tiny_detector, tmp_path, rows, header):
    import csv
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["a", "b", "c"])
        w.writerows(rows)
    for out in tmp_path.glob("s.csv*"):
        out.unlink()
    s = _read_or_refuse(tiny_detector.score_csv, path, tmp_path / "s.csv", 0.1)
    if s is not None:
        assert header and s["n"] == len(rows) and (tmp_path / "s.csv").exists()  # without a, b, c: other columns
    else:
        assert not (tmp_path / "s.csv").exists() and not (tmp_path / "s.csv.partial").exists()
