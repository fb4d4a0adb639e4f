"""FCD against training time: the race's systems at the 15- and 60-minute budgets, from results/race_<M>min.json.

    python benchmarks/quality/plot_race.py        # writes benchmarks/results/race_fcd_vs_minutes.png

Ours: the default recipe's runs without bf16 (15 minutes: the 'sde' rerun; 60 minutes: the 'fp32' run).
"""
import json
from pathlib import Path

from plots import line_plot

RESULTS = Path(__file__).resolve().parent.parent / "results"  # benchmarks/results
SERIES = {
    "diffusekit, dpmpp-2m-sde, 20 calls": {15: "diffusekit dpmpp-2m-sde 20 NFE [sde]", 60: "diffusekit dpmpp-2m-sde 20 NFE [fp32]"},
    "diffusekit, dpmpp-2m, 20 calls": {15: "diffusekit dpmpp-2m 20 NFE [sde]", 60: "diffusekit dpmpp-2m 20 NFE [fp32]"},
    "denoising-diffusion-pytorch, DDIM 50": {m: "denoising-diffusion-pytorch DDIM 50 NFE" for m in (15, 60)},
    "diffusers, DPM-Solver++ 20": {m: "diffusers DPMSolver++ 20 NFE" for m in (15, 60)},
    "diffusers, DDIM 50": {m: "diffusers DDIM 50 NFE" for m in (15, 60)},
}


def main():
    runs = {m: json.loads((RESULTS / f"race_{m}min.json").read_text()) for m in (15, 60)}
    series = {name: [(m, runs[m][key]["fcd"]) for m, key in keys.items() if key in runs[m]] for name, keys in SERIES.items()}
    series = {k: v for k, v in series.items() if v}
    for name, pts in series.items():
        print(name, ", ".join(f"{m} min: {f:.2f}" for m, f in pts))
    line_plot(series, RESULTS / "race_fcd_vs_minutes.png", "FCD vs training minutes (2 CPU cores), 1,000 samples",
              "training minutes")


if __name__ == "__main__":
    main()
