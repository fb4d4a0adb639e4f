"""The commands: each parses nothing, calls the library (run.py, detector.py) and writes what it returns."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..anomaly import UNSEEN_PENALTY
from ..checkpoint import (read_json, save_image_atomic, save_npz_atomic, save_samples, write_csv_atomic,
                          write_text_atomic)
from ..detector import AnomalyDetector, scores_counts, scores_table
from ..data import csv_chunks
from ..errors import DiffusekitError, check
from ..evaluate import evaluate, memorisation
from ..inverse import RESTORE_STEPS
from ..run import GRIDS_FILE, Latents, Run, distill, load, train
from ..runtime import init_distributed, is_main_process, pick_device
from ..samplers import ALL_KNOBS
from ..train import TrainConfig
from ..viz import image_grid, picture
from .outputs import check_outputs, check_suffix, restorations_out, samples_out

def given(a, *names) -> dict:
    """The options among `names` given on the command line (argparse leaves the others None)."""
    return {n: getattr(a, n) for n in names if getattr(a, n, None) is not None}


def open_run(a) -> Run:
    return load(a.run, a.checkpoint, ema=not a.no_ema, device=a.device)


# ---------------------------------------------------------------------------------------------------------


def cmd_train(a):
    settings = given(a, *(f.name for f in dataclasses.fields(TrainConfig)))
    out = settings.pop("out", None)
    if a.resume:
        check(out is not None, "resume needs out RUN_DIR", "resume", "out")
        run = train(settings.pop("data", None), out, resume=True, progress=not a.no_progress, **settings)
    else:
        check("data" in settings and out is not None, "train needs data SPEC and out RUN_DIR", "data", "out")
        run = train(settings.pop("data"), out, progress=not a.no_progress, **settings)
    if is_main_process():
        out = Path(out)
        print(f"run saved in {out} (checkpoint {out / 'last'}, log {out / 'log.csv'}, samples {out / 'samples'})")
        if run.weights[0] == "best":
            print(f"held-out rows: their loss was lowest at step {run.step} ({out / 'best'}, which sampling uses); "
                  f"stopped at step {read_json(out / 'last' / 'state.json')['step']}")


def cmd_distill(a):
    check(a.minutes is not None or a.steps is not None, "distill needs a budget: --minutes M or --steps N",
          "minutes", "steps")
    settings = given(a, "minutes", "steps", "lr", "ct_target", "ct_q", "bf16", "batch_size", "seed", "device")
    distill(a.run, a.out, progress=not a.no_progress, **settings)
    if is_main_process():
        print(f"distilled run saved in {a.out}: sample it in 1-4 calls (default: consistency sampler, 2 steps)")


def cmd_sample(a):
    check(a.out or a.grid, "nothing to write: give --out FILE.npz|DIR and/or --grid FILE.png")
    check_suffix("--grid", a.grid, ".png")
    run = open_run(a)
    check_outputs([("--out", a.out, samples_out(a.out, run.kind)), ("--grid", a.grid, "file")], runs=[a.run])
    options = given(a, "sampler", "steps", "rho", "sigma_min", "sigma_max", "temperature", "seed", "guidance",
                    "batch_size", *ALL_KNOBS)
    if a.schedule:
        options["grid"] = a.schedule
    print(run.sampling(**options))
    where = None
    if a.where is not None:
        column, eq, value = a.where.partition("=")
        check(eq == "=" and column, f"--where must be COLUMN=VALUE, got {a.where!r}", "where")
        where = {column: value}
    if run.kind == "vector" and str(a.out).endswith(".csv") and not (a.grid or a.report):  # written as drawn
        run.sample_csv(a.n, a.out, label=a.label, where=where, resume=a.resume, progress=not a.no_progress, **options)
        print(f"wrote {a.n} samples to {a.out}")
        return
    check(not a.resume, "--resume continues the rows of a table's --out FILE.csv, written as they are drawn (without "
          "--grid or --report); these samples are drawn at once", "resume")
    x, labels = run.sample(a.n, label=a.label, where=where, return_labels=True, progress=not a.no_progress, **options)
    if a.out:
        save_samples(a.out, x, labels)
        print(f"wrote {a.n} samples to {a.out}")
    if a.grid:
        save_image_atomic(picture(x[:256] if run.kind == "image" else x.to_numpy(), run.kind), a.grid)
        print(f"wrote grid {a.grid}")
    if a.report:  # the samples as written (8-bit images re-quantized); conditional: -ln p(x | its label), unguided
        r = run.nll(x, labels=labels, class_labels=labels is not None, seed=a.seed, batch_size=a.batch_size,
                    progress=not a.no_progress).summary()
        unit = "bits/dim (8-bit, dequantized)" if run.kind == "image" else "bits/dim"
        print(f"NLL of the {a.n} samples at temperature {a.temperature:g}{' given their labels' if labels is not None else ''}"
              f": {r['bits_per_dim']:.4f} +- {r['bits_per_dim_se'] or float('nan'):.4f} {unit}; {r['nll_nats']:.2f} +- "
              f"{r['nll_nats_se'] or float('nan'):.2f} nats/sample (exact, probability-flow ODE)")


def cmd_tune_steps(a):
    run = open_run(a)
    t0 = time.time()
    fitted = run.tune_steps(a.steps, n=a.n, order=a.order, seed=a.seed, candidates=a.candidates,
                            contraction=a.contraction, batch_size=a.batch_size)
    for k, (sigmas, err) in fitted.items():
        weighted = " (weighted)" if a.contraction > 0 else ""
        print(f"{k} steps: {' '.join(f'{s:.4g}' for s in sigmas)}  (summed local error{weighted} {err:.4g})")
    print(f"wrote {run.path / GRIDS_FILE} in {time.time() - t0:.0f} s: sample --steps N now uses these grids "
          f"(--schedule karras for the default one)")


def cmd_nll(a):
    rank = init_distributed(pick_device(a.device))[0]
    run = open_run(a)
    if rank == 0:
        check_outputs([("--csv", a.csv, "file")], inputs=[a.data], runs=[a.run])
    a.method = a.method or ("elbo" if run.kind == "text" else "ode")
    ode, elbo = given(a, "estimator", "probes", "rtol", "atol"), given(a, "levels")
    methods = {"ode": ode, "elbo": elbo} if a.method == "both" else {a.method: {**ode, **elbo}}
    methods = {m: {**opts, "method": m, "seed": a.seed, "batch_size": a.batch_size} for m, opts in methods.items()}
    progress = not a.no_progress and not a.json
    if run.kind == "vector" and str(a.data).endswith(".csv"):  # streamed: any length, per-row values as they go
        report = run.nll_csv(a.data, a.csv, methods=methods, n=a.n, class_labels=a.class_labels, resume=a.resume,
                             progress=progress)
        if rank == 0:
            report = {"run": str(a.run), "data": a.data, **report}
            print(json.dumps(report) if a.json else nll_text(report, [k for k in report if k in ("exact", "elbo")],
                                                             a.csv))
        return
    check(not a.resume, "--resume continues the per-sample values of a table's CSV, written as they go; these "
          "samples are measured at once", "resume")
    results = {("exact" if m == "ode" else "elbo"): run.nll(a.data, n=a.n, class_labels=a.class_labels,
                                                            progress=progress, **opts) for m, opts in methods.items()}
    if rank != 0:
        return
    first = next(iter(results.values()))
    report = {"run": str(a.run), "data": a.data, "n": len(first.nats), "dims": first.dims, "units": first.units,
              **{name: r.summary() for name, r in results.items()}}
    if a.csv:
        head = ["index"] + [f"{k}_{u}" for k in results for u in ("nats", "bits_per_dim")]
        rows = [[str(i)] + [f"{float(v):.6f}" for r in results.values() for v in (r.nats[i], r.bits_per_dim[i])]
                for i in range(len(first.nats))]
        write_csv_atomic(a.csv, head, rows)
    print(json.dumps(report) if a.json else nll_text(report, results, a.csv))


def nll_text(report, results, csv_path) -> str:
    pm = lambda se, f: "" if se is None else f" +- {se:{f}}"  # noqa: E731
    lines = []
    for name in results:
        r = report[name]
        per = "char" if report["units"].startswith("characters") else "dim"
        lines.append(f"{'exact NLL (ODE)' if name == 'exact' else 'ELBO bound'}: {r['bits_per_dim']:.4f}"
                     f"{pm(r['bits_per_dim_se'], '.4f')} bits/{per}, {r['nll_nats']:.2f}{pm(r['nll_nats_se'], '.2f')} "
                     f"nats/sample (n={report['n']}, {r['nfe_per_sample']:.0f} "
                     f"{'ODE' if name == 'exact' else 'network'} evaluations/sample, {r['seconds']:.0f} s)")
    return "\n".join(lines + [f"units: {report['units']}" + (f"; per-sample values in {csv_path}" if csv_path else "")])


def flow_options(a) -> dict:
    return given(a, "method", "steps", "rtol", "atol", "batch_size")


def cmd_encode(a):
    check_suffix("--out", a.out, ".npz", ".csv")
    run = open_run(a)
    check(a.out.endswith(".npz") or (run.kind == "vector" and str(a.data).endswith(".csv")), "--out FILE.csv holds "
          "the latents of a table's CSV, written as they go; give --out FILE.npz", "out")
    check(a.out.endswith(".csv") or not a.resume, "--resume continues the latents of a table's CSV written to --out "
          "FILE.csv", "resume")
    check_outputs([("--out", a.out, "file")], inputs=[a.data], runs=[a.run])
    if a.out.endswith(".csv"):  # streamed: any length, written as they go
        z = run.encode_csv(a.data, a.out, n=a.n, resume=a.resume, progress=not a.no_progress, **flow_options(a))
        print(f"wrote {z['n']} latents (unit variance, {run.model_config.in_shape[0]} values each) to {a.out} "
              f"[{z['method']}, {z['nfe_per_sample']:.0f} network calls/sample, {z['seconds']:.0f} s]")
        return
    z = run.encode(a.data, n=a.n, progress=not a.no_progress, **flow_options(a))
    save_npz_atomic(a.out, latents=z.latents, source=z.source, method=np.array(z.method))
    print(f"wrote {len(z)} latents (unit variance, shape {tuple(z.latents.shape[1:])}) to {a.out} "
          f"[{z.method}, {z.nfe_per_sample:.0f} network calls/sample, {z.seconds:.0f} s]")


def cmd_decode(a):
    check(a.latents.endswith((".npz", ".csv")), f"--latents must be an .npz or .csv file written by diffusekit encode, "
          f"got {a.latents!r}")
    run = open_run(a)
    check_outputs([("--out", a.out, samples_out(a.out, run.kind))], inputs=[a.latents], runs=[a.run])
    z = read_latents(a.latents)
    x = run.decode(z, model_space=True, progress=not a.no_progress, **flow_options(a))
    save_samples(a.out, run.to_user(x))
    msg = f"wrote {len(x)} decoded samples to {a.out} [{a.method or 'ode'}]"
    if z.source is not None and z.source.shape == x.shape:
        src = torch.from_numpy(z.source)
        rel = float((x - src).flatten(1).norm(dim=1).div(src.flatten(1).norm(dim=1).clamp_min(1e-12)).max())
        msg += f"; round trip: max relative error {rel:.2e}, max abs error {float((x - src).abs().max()):.2e} (model space)"
    print(msg)


def read_latents(path) -> Latents:
    if path.endswith(".csv"):  # a table's latents (Run.encode_csv): index, z0, z1, ...
        rows = next(csv_chunks(path, 1 << 62))
        try:
            check(rows.columns[0] == "index" and len(rows.columns) > 1, "")
            return Latents(rows.cells[:, 1:].astype(np.float64).astype(np.float32))
        except (DiffusekitError, ValueError):
            raise DiffusekitError(f"{path}: not latents written by diffusekit encode (columns index, z0, z1, ...: "
                                  f"numbers)") from None
    try:
        with np.load(path) as f:
            check("latents" in f, f"{path} has no 'latents' array (write it with diffusekit encode)")
            z = f["latents"]
            check(not np.iscomplexobj(z), f"{path}: the latents are complex numbers; give real ones")
            source = f["source"].astype(np.float32) if "source" in f else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DiffusekitError(f"cannot read {path}: {e}") from None
    return Latents(np.asarray(z, dtype=np.float32), source)


def cmd_restore(a):
    check_suffix("--compare", a.compare, ".png")
    run = open_run(a)
    check_outputs([("--out", a.out, restorations_out(a.out)), ("--compare", a.compare, "file")],
                  inputs=[a.images, a.truth], runs=[a.run])
    task = given(a, "mask", "factor", "kernel", "sigma")
    options = given(a, "sampler", "steps", "temperature", "seed", "zeta", "resample", "n_samples", "batch_size",
                    *ALL_KNOBS)
    if a.schedule:
        options["grid"] = a.schedule
    r = run.restore(a.images, a.command, truth=a.truth, method=restore_method(a), progress=not a.no_progress,
                    **task, **options)
    check(not (a.out.lower().endswith(".png") and len(r.images) > 1), f"--out {a.out} holds one image but there "
          f"are {len(r.images)} restorations; use .npz or a folder")
    write_restoration(a.out, r)
    msg = (f"wrote {len(r.images)} restorations ({r.n_inputs} inputs x {r.n_samples}) to {a.out} [{r.method}"
           + ("" if r.method == "tweedie" else f", {a.sampler or 'ddpm'}, {a.steps or RESTORE_STEPS} steps, {r.grid} grid")
           + f", {r.seconds / len(r.images):.2f} s/image]\nmeasurement consistency: RMS(y - A x) = {r.consistency:.4f} "
           f"(image range [0, 1]; noise sigma {a.sigma or 0:g})")
    if r.psnr is not None:
        msg += f"\nagainst the truth: PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.4f}" + (
            f"; mean of {r.n_samples}: PSNR {r.psnr_mean:.2f} dB" if r.psnr_mean is not None else "")
    if a.compare:
        save_image_atomic(r.figure(run.codec), a.compare)
        msg += f"\nwrote comparison figure {a.compare}"
    print(msg)


def restore_method(a):
    """--method, or denoise's --mmse (the posterior mean) / --sample (posterior samples)."""
    mmse, sample = getattr(a, "mmse", False), getattr(a, "sample", False)
    check(not (mmse and sample), "choose one of --mmse (posterior mean) and --sample (posterior samples)")
    implied = "sample" if sample else "tweedie" if mmse else None
    check(not (a.method and implied and a.method != implied), f"--method {a.method} contradicts "
          f"--{'sample' if sample else 'mmse'}")
    return a.method or implied or ("tweedie" if a.command == "denoise" else "repaint")


def write_restoration(out, r):
    if out.endswith(".npz"):
        extra = {} if r.mean is None else {"mean": r.mean, "std": r.std}
        save_npz_atomic(out, arr_0=r.images, **extra)
        return
    if out.lower().endswith(".png"):
        im = r.images[0]
        save_image_atomic(Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im), out)
        return
    save_samples(out, r.images)
    if r.mean is not None:
        save_samples(str(Path(out) / "mean"), r.mean)
        save_samples(str(Path(out) / "std"), (np.clip(r.std, 0, 0.5) * 510).round().astype(np.uint8))


def cmd_infill(a):
    run = open_run(a)
    check_outputs([("--out", a.out, samples_out(a.out, "text"))], inputs=[a.data], runs=[a.run])
    filled = run.infill(a.data, mask=a.mask, progress=not a.no_progress,
                        **given(a, "steps", "temperature", "seed", "batch_size"))
    save_samples(a.out, filled)
    print(f"wrote {len(filled)} filled texts to {a.out}")


def cmd_anomaly_fit(a):
    options = given(a, "minutes", "steps", "models", "preset", "holdout", "seed", "features", "batch_size")
    det = AnomalyDetector.fit(a.data, a.out, runs=a.run, device=a.device, progress=not a.no_progress, **options)
    i = det.info
    runs = i["runs"]
    trained = "trained earlier" if a.run else f"trained on {i['n_train']} normal samples"
    print(f"detector saved in {a.out}: {'model' if len(runs) == 1 else f'mean of {len(runs)} models'} "
          f"{', '.join(runs)} ({trained}), scores fit on {i['n_fit']}, calibrated on {i['n_calibration']} "
          f"(smallest --fpr with a guarantee: {1 / (i['n_calibration'] + 1):.3g})")


def open_detector(a, outputs) -> AnomalyDetector:
    det = AnomalyDetector.load(a.detector, a.device)
    check(not getattr(a, "maps", None) or det.kind == "image", "--maps draws per-pixel maps and is for images; "
          "tables get per-column contributions")
    check_outputs(outputs, inputs=[a.data], runs=det.run_paths, detector=a.detector)
    return det


def cmd_anomaly_score(a):
    check_suffix("--out", a.out, ".csv")
    rank = init_distributed(pick_device(a.device))[0]  # under torchrun: each rank scores a share, rank 0 writes
    det = open_detector(a, [("--out", a.out, "file"), ("--maps", a.maps, "folder")])
    if det.kind == "vector" and str(a.data).endswith(".csv"):  # streamed: any length, written as it goes
        s = det.score_csv(a.data, a.out, a.fpr, resume=a.resume, batch_size=a.batch_size,
                          progress=not a.no_progress)
    else:
        check(not a.resume, "--resume continues the scores of a CSV table, written as they go; these samples are "
              "scored at once", "resume")
        df = det.score(a.data, a.fpr, batch_size=a.batch_size, progress=not a.no_progress, return_maps=bool(a.maps))
        if rank != 0:
            return
        df, maps = df if a.maps else (df, None)
        if maps is not None:  # made before the scores are written: a folder that cannot be made leaves an earlier file
            Path(a.maps).mkdir(parents=True, exist_ok=True)
        write_csv_atomic(a.out, *scores_table(df))
        if maps is not None:
            for i, h in enumerate(maps):
                Image.fromarray(h).save(Path(a.maps) / f"{i:06d}.png")
        s = {**scores_counts(df["flag"], df.get("unseen_categories", ())), "fpr": df.attrs["fpr"],
             "fpr_note": df.attrs["fpr_note"]}
    if rank != 0:
        return
    rate, note, n, flagged, n_unseen, unseen_rows = (s[k] for k in ("fpr", "fpr_note", "n", "flagged", "unseen",
                                                                     "unseen_rows"))
    msg = (f"scored {n} samples -> {a.out}: {flagged} flagged at false-positive rate {rate:.4g} (conformal p-value "
           f"<= {rate:.4g}; on normal data the flagged fraction is at most about {rate:.4g})")
    if n_unseen:
        msg += (f"; {n_unseen} unseen categor{'y' if n_unseen == 1 else 'ies'} in {unseen_rows} rows (each adds "
                f"{UNSEEN_PENALTY:g} to the score; listed in unseen_categories)")
    if a.maps:
        msg += f"; anomaly maps (white: >= 5 normal standard deviations of error) in {a.maps}"
    print(msg + (f"\nnote: {note}" if note else ""))


def cmd_anomaly_report(a):
    det = open_detector(a, [("--out", a.out, "folder")])
    rep = det.report(a.data, label_column=a.label_column, fpr=a.fpr, batch_size=a.batch_size,
                     progress=not a.no_progress)
    out, s = Path(a.out), rep.summary
    out.mkdir(parents=True, exist_ok=True)
    for name, image in rep.figures().items():
        save_image_atomic(image, out / name)
    write_text_atomic(out / "report.json", json.dumps({**s, "data": a.data}, indent=2) + "\n")
    c = s["confusion"]
    print(f"AUROC {s['auroc']:.4f}, AUPRC {s['auprc']:.4f} (n = {s['n']}, {s['n_anomalies']} anomalies); at "
          f"false-positive rate {s['fpr_target']:.4g}: {c['tp']} TP, {c['fp']} FP, {c['fn']} FN, {c['tn']} TN (false-positive rate "
          f"{s['realised_fpr']:.4f}) -> {out}/report.json, roc.png, pr.png"
          + (f"\nnote: {s['fpr_note']}" if "fpr_note" in s else ""))


def cmd_info(a):
    print(load(a.run, device="cpu").describe())


def cmd_export(a):
    out = load(a.run, checkpoint=a.checkpoint, ema=not a.no_ema, device="cpu").export(a.out, a.format)
    print(f"wrote {out} (load it with diffusers.DiffusionPipeline.from_pretrained; diffusekit must be installed)")


def cmd_evaluate(a):
    check_outputs([("--json", a.json, "file"), ("--neighbours", a.neighbours, "file")],
                  inputs=[a.samples, a.reference] + [p for p in (a.training, a.holdout) if p])
    check(a.training or not a.neighbours, "--neighbours draws samples beside their nearest training items: give "
          "--training")
    check(a.holdout or not a.target, "--target (machine-learning efficiency) tests on real held-out rows: give "
          "--holdout")
    result = evaluate(a.samples, a.reference, holdout=a.holdout, target=a.target, cache_dir=a.cache_dir,
                      n_boot=a.bootstrap, progress=True)
    if a.training:
        report = memorisation(a.samples, a.training)
        result["memorisation"] = report.summary()
        if a.neighbours:
            save_image_atomic(report.figure(), a.neighbours)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        write_text_atomic(a.json, text + "\n")
        print(f"wrote {a.json}", file=sys.stderr)


def cmd_demo(a):
    out, k = Path(a.out), 2
    while (out / "config.json").exists():  # never overwrite an earlier demo
        out, k = Path(f"{a.out}-{k}"), k + 1
    print(f"training a class-conditional U-Net on scikit-learn's 8x8 digits for {a.minutes} min -> {out}")
    run = train("digits", out, preset="small", minutes=a.minutes, batch_size=128, seed=a.seed, sample_every=0,
                ckpt_every=500, progress=not a.no_progress)
    grid = lambda x, nrow: image_grid(x, nrow=nrow, scale=4)  # noqa: E731
    grid(run.sample(100, seed=a.seed, labels=np.arange(100) % 10), 10).save(out / "demo_grid.png")
    grid(run.temperature_strip(np.arange(10), seed=a.seed), 10).save(out / "demo_temperature.png")
    path = run.trajectory(label=3, seed=a.seed)
    grid(path, len(path) // 2).save(out / "demo_trajectory.png")
    print(f"samples (one row per class 0-9):            {out / 'demo_grid.png'}\n"
          f"temperature strip (rows: T = 0, 0.5, 1, 1.5): {out / 'demo_temperature.png'}\n"
          f"denoising trajectory (top: x, bottom: D(x)): {out / 'demo_trajectory.png'}\n"
          f"run (checkpoint, log, config):               {out}\n"
          f"next: diffusekit sample {out} --n 64 --grid grid.png")


def cmd_serve(a):
    check(1 <= a.port <= 65535, f"--port must be in 1-65535, got {a.port}")
    try:
        import uvicorn  # noqa: F401

        from ..service import TOKEN_ENV, MainThreadWorker, create_app, open_target, serve
    except ImportError:
        raise DiffusekitError("serve needs the serve extra: pip install 'diffusekit[serve]' (and [ui] for the "
                              "page)") from None
    token = a.token or os.environ.get(TOKEN_ENV) or None
    target = open_target(a.path)
    worker = MainThreadWorker()
    app = create_app(target, token=token, ui=not a.no_ui, worker=worker)
    print(f"serving {a.path} on http://{a.host}:{a.port}/ (page: /ui/, API: /docs"
          f"{', token required' if token else ''}); Ctrl-C stops", flush=True)
    serve(app, worker, a.host, a.port)
