"""The web page (gradio) over one run or detector: Generate, Restore (images), Infill (text), Likelihood and Anomaly
tabs, each a few calls on the library's objects. It only reads controls, calls, and shows; a bad input is the
library's one-line message on the page. Nothing is fetched from elsewhere (no analytics; gradio serves its own fonts and scripts)."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from .checkpoint import save_samples  # noqa: E402
from .data.text import text_lines, typed_texts  # noqa: E402
from .errors import DiffusekitError  # noqa: E402
from .samplers import SAMPLERS, sampling_defaults  # noqa: E402
from .viz import image_grid  # noqa: E402

def said(fn):
    """A handler whose input errors show on the page as one line (and the server keeps serving)."""
    def handler(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DiffusekitError, OSError, ValueError) as e:
            raise gr.Error(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    handler.__name__, handler.__doc__ = fn.__name__, fn.__doc__
    return handler


def big(images: np.ndarray, width: int = 256) -> list:
    """uint8 N x H x W x C images as PIL images blown up (nearest) to about `width` px, for the page."""
    scale = max(1, width // images.shape[2])
    return [image_grid(im[None], nrow=1, scale=scale, pad=0) for im in images]


def to_model_image(value, channels: int) -> np.ndarray:
    """An image from a gradio component (numpy, any mode) as uint8 H x W x C with the model's channels."""
    im = Image.fromarray(np.asarray(value).astype(np.uint8))
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return a[..., None] if a.ndim == 2 else a


def build_ui(service) -> gr.Blocks:
    run, det = service.run, service.detector
    title = f"diffusekit: {service.target.path.name}"
    with gr.Blocks(title=title, analytics_enabled=False) as ui:
        gr.Markdown(f"## {title}\n{run.kind} model, " + (_text_model(run.codec) if run.kind == "text" else
                                                          f"shape {tuple(run.model_config.in_shape)}")
                    + (f", classes: {', '.join(run.class_names)}" if run.class_names else "")
                    + (f"; anomaly detector calibrated on {det.info['n_calibration']} normal samples" if det else ""))
        if det is not None:
            _anomaly_tab(service)
        _generate_tab(service)
        if run.kind == "image":
            _restore_tab(service)
        if run.kind == "text":
            _infill_tab(service)
        _likelihood_tab(service)
    return ui


def _text_model(codec) -> str:
    items = f"windows of a document of {codec.length}" if codec.mode == "text" else f"lines of up to {codec.length}"
    return f"{items} characters, {len(codec.vocab)} characters in its vocabulary"


def _generate_tab(service):
    run = service.run
    text = run.kind == "text"  # unmasking: one position a step by default, no sampler to choose
    default = {"sampler": "auto", "steps": run.model_config.in_shape[0] if text else 20,
               **sampling_defaults(run.objective)}
    with gr.Tab("Generate"):
        with gr.Row():
            sampler = gr.Dropdown(["auto", *SAMPLERS], value=default["sampler"], label="sampler", visible=not text)
            steps = gr.Slider(1, max(100, default["steps"]), value=default["steps"], step=1,
                              label="steps (positions unmasked: one a step by default)" if text else "steps")
            temperature = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="temperature", elem_id="temperature")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
            n = gr.Slider(1, 64, value=16, step=1, label="samples")
        label = guidance = gr.State(None)
        if run.num_classes:
            with gr.Row():
                label = gr.Dropdown(["random"] + run.class_names, value="random", label="class")
                guidance = gr.Slider(0.0, 5.0, value=1.0, step=0.1, label="guidance (1: none)")
        go = gr.Button("Generate", variant="primary", elem_id="generate")
        if run.kind == "image":
            gallery = gr.Gallery(label="samples", columns=8, elem_id="samples")
            strip = gr.Image(label="the first 8 seeds at temperatures 0, 0.5, 1, 1.5 (rows)", type="pil")
            path = gr.Image(label="denoising trajectory of the first sample (top: x, bottom: D(x))", type="pil")
        elif text:
            table = gr.Textbox(label="samples (one a line)", lines=12, elem_id="samples")
        else:
            table = gr.Dataframe(label="samples", elem_id="samples")
        download = gr.File(label="download")

        @said
        def generate(sampler, steps, temperature, seed, n, label, guidance, progress=gr.Progress(track_tqdm=True)):
            options = dict(steps=int(steps), temperature=float(temperature), seed=int(seed or 0))
            if not text:
                options["sampler"] = sampler
            if run.num_classes:
                options["guidance"] = float(guidance)
            cls = None if label in (None, "random") else run.class_names.index(label)
            with service.lock:
                out = run.sample(int(n), label=cls, progress=True, **options)
                if run.kind != "image":
                    f = Path(tempfile.mkdtemp(prefix="diffusekit-")) / f"samples.{'txt' if text else 'csv'}"
                    save_samples(f, out)
                    return "\n".join(out) if text else out, str(f)
                labels = None if cls is None else [cls] * 8
                strip_images = run.temperature_strip(labels, n=8, **{**options, "temperature": None})
                trajectory = run.trajectory(label=cls, **{**options, "temperature": float(temperature)})
            f = Path(tempfile.mkdtemp(prefix="diffusekit-")) / "samples.npz"
            save_samples(f, out)
            scale = max(1, 48 // out.shape[1])
            return (big(out), image_grid(strip_images, 8, scale), image_grid(trajectory, len(trajectory) // 2, scale),
                    str(f))

        outputs = [gallery, strip, path, download] if run.kind == "image" else [table, download]
        go.click(generate, [sampler, steps, temperature, seed, n, label, guidance], outputs)


def _restore_tab(service):
    run = service.run
    with gr.Tab("Restore"):
        gr.Markdown(f"Upload a {run.codec.size_text} image (for upscaling: that size / factor); to "
                    f"inpaint, paint the region to fill.")
        with gr.Row():
            editor = gr.ImageEditor(label="image (paint the region to fill)", type="numpy", sources=["upload"],
                                    brush=gr.Brush(colors=["#ff0000"], default_size=2), elem_id="restore-input")
            truth = gr.Image(label="clean image (optional: PSNR)", type="numpy", sources=["upload"])
        with gr.Row():
            task = gr.Radio(["inpaint", "upscale x2", "upscale x4", "denoise", "deblur"], value="inpaint", label="task")
            sigma = gr.Number(0.1, minimum=0, label="noise sigma ([0, 1] units; denoise, deblur)")
            kernel = gr.Textbox("gaussian:1", label="blur kernel (deblur)")
            k = gr.Slider(1, 8, value=4, step=1, label="restorations")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
        go = gr.Button("Restore", variant="primary", elem_id="restore")
        gallery = gr.Gallery(label="restorations", columns=8, elem_id="restorations")
        with gr.Row():
            mean = gr.Image(label="mean", type="pil")
            spread = gr.Image(label="pixel-wise spread", type="pil")
        metrics = gr.Markdown(elem_id="restore-metrics")

        @said
        def restore(value, truth, task, sigma, kernel, k, seed, progress=gr.Progress(track_tqdm=True)):
            if value is None or value.get("background") is None:
                raise DiffusekitError("upload an image to restore")
            image = to_model_image(value["background"], run.codec.channels)[None]
            options = dict(n_samples=int(k), seed=int(seed or 0), progress=True)
            if truth is not None:
                options["truth"] = to_model_image(truth, run.codec.channels)[None]
            if task == "inpaint":
                layers = [np.asarray(layer) for layer in value.get("layers") or []]
                painted = np.zeros(image.shape[1:3], bool)
                for layer in layers:
                    alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else layer.reshape(
                        *layer.shape[:2], -1).max(-1)
                    if alpha.shape == painted.shape:
                        painted |= alpha > 0
                if not painted.any():
                    raise DiffusekitError("paint the region to fill on the image first")
                call = lambda: run.inpaint(image, painted, **options)  # noqa: E731
            elif task.startswith("upscale"):
                call = lambda: run.upscale(image, factor=int(task[-1]), **options)  # noqa: E731
            elif task == "denoise":
                call = lambda: run.denoise(image, sigma=float(sigma or 0), **{**options, "method": "sample"})  # noqa: E731
            else:
                call = lambda: run.deblur(image, kernel=kernel, sigma=float(sigma or 0), **options)  # noqa: E731
            with service.lock:
                r = call()
            text = f"consistency RMS(y - A x): {r.consistency:.4f}; {r.seconds:.1f} s"
            if r.psnr is not None:
                text += f"; PSNR {r.psnr:.2f} dB (first), SSIM {r.ssim:.3f}" + (
                    f", PSNR of the mean {r.psnr_mean:.2f} dB" if r.psnr_mean is not None else "")
            spread_image = None
            if r.std is not None:
                s = r.std[0] / max(float(r.std[0].max()), 1e-8)
                spread_image = big((s * 255).round().astype(np.uint8)[None])[0]
            return big(r.images), None if r.mean is None else big(r.mean)[0], spread_image, text

        go.click(restore, [editor, truth, task, sigma, kernel, k, seed], [gallery, mean, spread, metrics])


def _infill_tab(service):
    run = service.run
    with gr.Tab("Infill"):
        mask = gr.Textbox("_", label="the character that marks what to fill", max_length=1)
        given = gr.Textbox(label="text with the characters to fill marked (one item a line)", lines=6,
                           placeholder="the quick brown ___ jumps over the ____ dog", elem_id="infill-input")
        with gr.Row():
            steps = gr.Number(0, precision=0, minimum=0, label="steps (0: one marked position a step)")
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0: the most likely)")
            seed = gr.Number(0, precision=0, minimum=0, label="seed")
        go = gr.Button("Fill", variant="primary", elem_id="infill")
        filled = gr.Textbox(label="filled", lines=6, elem_id="filled")

        @said
        def fill(given, mask, steps, temperature, seed, progress=gr.Progress(track_tqdm=True)):
            lines = text_lines(given or "")
            if not lines:
                raise DiffusekitError("type the text to fill first, the characters to fill marked with " + repr(mask))
            with service.lock:
                out = run.infill(lines, mask=mask, steps=int(steps) or None, temperature=float(temperature),
                                 seed=int(seed or 0), progress=True)
            return "\n".join(out)

        go.click(fill, [given, mask, steps, temperature, seed], filled)


def _likelihood_tab(service):
    run = service.run
    text = run.kind == "text"
    with gr.Tab("Likelihood"):
        if text:  # masked diffusion has its bound only
            files = _typed(run.codec, "bits per character of each", "nll-input")
            method = gr.State("elbo")
        else:
            files = _upload(run.kind, "the negative log-likelihood of each item", "nll-input")
            method = gr.Radio(["ode", "elbo"], value="ode", label="method (ode: exact; elbo: a bound, faster)")
        go = gr.Button("Measure", variant="primary", elem_id="nll")
        table = gr.Dataframe(label="bits per character (an upper bound)" if text else "bits/dim per item",
                             elem_id="nll-table")

        @said
        def measure(files, method, progress=gr.Progress(track_tqdm=True)):
            data = typed_texts(files, run.codec) if text else _uploaded(files, run.codec)
            with service.lock:
                lik = run.nll(data, method=method, progress=True)
            per = {"text": data, "bits_per_character": lik.bits_per_dim} if text else {"bits_per_dim": lik.bits_per_dim}
            return pd.DataFrame({"item": np.arange(len(lik.nats)), **per, "nats": lik.nats})

        go.click(measure, [files, method], table)


def _anomaly_tab(service):
    det = service.detector
    with gr.Tab("Anomaly"):
        what = "each item's score, conformal p-value and flag"
        files = _typed(det.run.codec, what, "score-input") if det.kind == "text" else _upload(det.kind, what,
                                                                                              "score-input")
        with gr.Row():
            lowest = math.ceil(1000 / (det.info["n_calibration"] + 1)) / 1000  # what the calibration set allows
            fpr = gr.Slider(lowest, 0.5, value=max(0.01, lowest), step=0.001, label="false-positive rate")
            label_column = gr.Textbox("", label="label column (1 = anomaly; optional: ROC curve)",
                                      visible=det.kind == "vector")
        go = gr.Button("Score", variant="primary", elem_id="score")
        summary = gr.Markdown(elem_id="score-summary")
        table = gr.Dataframe(label="scores", elem_id="score-table")
        with gr.Row():
            maps = gr.Gallery(label="heat maps (images)", columns=8, visible=det.kind == "image")
            roc = gr.Image(label="ROC curve", type="pil", visible=det.kind == "vector")

        @said
        def score(files, fpr, label_column, progress=gr.Progress(track_tqdm=True)):
            data = typed_texts(files, det.run.codec) if det.kind == "text" else _uploaded(files, det.run.codec)
            roc_image, text = None, ""
            with service.lock:
                if label_column:
                    rep = det.report(data, label_column=label_column, fpr=float(fpr), progress=True)
                    s = rep.summary
                    roc_image = rep.figures()["roc.png"]
                    text = (f"AUROC {s['auroc']:.4f}, AUPRC {s['auprc']:.4f}; at fpr {s['fpr_target']:g}: realised false-positive "
                            f"rate {s['realised_fpr']:.3f}, true-positive rate {s['tpr']:.3f}. ")
                    df, heat = rep.scores, None
                elif det.kind == "image":
                    df, heat = det.score(data, float(fpr), progress=True, return_maps=True)
                else:
                    df, heat = det.score(data, float(fpr), progress=True), None
            text += f"{int(df['flag'].sum())} of {len(df)} flagged at false-positive rate {df.attrs['fpr']:.4g}."
            heat_images = [] if heat is None else big(heat[..., None])
            return text, df.reset_index(), heat_images, roc_image

        go.click(score, [files, fpr, label_column], [summary, table, maps, roc])


def _upload(kind: str, what: str, elem_id: str):
    """What to upload, said, and the upload box."""
    gr.Markdown("Upload " + ("a CSV with the table's columns" if kind == "vector" else
                             "images (an .npz, or PNG files)") + f": {what}.")
    return gr.File(label="data", file_count="multiple", elem_id=elem_id)


def _typed(codec, what: str, elem_id: str):
    """What to type or paste, said, and the text box (items as `data.text.typed_texts` reads them)."""
    items = "lines (one item a line)" if codec.mode == "lines" else f"text (cut into windows of {codec.length} characters)"
    return gr.Textbox(label=f"{items}: {what}", lines=8, elem_id=elem_id)


def _uploaded(files, codec):
    """Uploaded files as data: one .csv or .npz (its path), or image files (stacked)."""
    if not files:
        raise DiffusekitError("upload a file first")
    paths = [f if isinstance(f, str) else f.name for f in (files if isinstance(files, list) else [files])]
    if len(paths) == 1 and paths[0].lower().endswith((".csv", ".npz")):
        return paths[0]
    if any(p.lower().endswith((".csv", ".npz")) for p in paths):
        raise DiffusekitError("upload one .csv or .npz file, or image files")
    from .data import read_images

    images = [read_images(p) for p in paths]
    shapes = {a.shape[1:] for a in images}
    if len(shapes) > 1:
        raise DiffusekitError(f"the images have different sizes: {sorted(shapes)}")
    return np.concatenate(images)
