"""The compare report: results table (mean ± sd over seeds, best per column marked), GIFs and
strips from the same seed frames, training curves and metric-vs-horizon plots, JSON and CSV.

Everything is written into the report folder the caller gives (compare.py builds it under a
temporary name and renames it when complete). Pages reference images by relative path, so the
folder can be moved, zipped or served as it is.
"""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

# (column, label, which value is best: "low", "high", "real" = closest to the real data, None = no mark)
COLUMNS = [
    ("nelbo_bpp", "NELBO bits/px", "low"), ("iwae_bpp", "IWAE bits/px", "low"), ("iou", "next-frame IoU", "high"),
    ("frame_fid", "frame FD", "low"), ("fid_k", "FID_k", "low"), ("fid_g", "FID_g", "low"),
    ("dist_k", "Dist_k", "real"), ("dist_g", "Dist_g", "real"), ("freeze_rate", "freeze rate", "low"),
    ("jitter", "jitter px/f³", "real"), ("flicker", "flicker", "real"), ("implausible@256", "implausible @256", "low"),
    ("static@256", "static @256", "low"), ("loop@256", "loop @256", "low"),
    ("parameters", "parameters", "low"), ("train_minutes", "train min (all stages)", None),
    ("train_frames_per_s", "train frames/s", "high"), ("rollout_fps_batch", "rollout frames/s", "high"),
    ("train_peak_rss_mb", "train peak RSS MB", "low"),
]
# the real-data value of a column, where one exists (the reference row of the table)
REAL = {"frame_fid": "frame_fid_floor", "fid_k": "fid_k_floor", "fid_g": "fid_g_floor", "dist_k": "real_dist_k",
        "dist_g": "real_dist_g", "freeze_rate": "real_freeze_rate", "jitter": "real_jitter", "flicker": "real_flicker",
        "implausible@256": "real_implausible", "static@256": "real_static", "loop@256": "real_loop"}
# a second reference row: the spread of real training segments (a short test block can be less varied)
REAL_TRAIN = {"dist_k": "real_train_dist_k", "dist_g": "real_train_dist_g"}
HORIZON_METRICS = ("frame_fid", "frame_fid_train", "implausible", "static", "loop", "fid_k", "fid_g", "flicker")


# ----------------------------------------------------------------------------- numbers
def flatten(result: dict) -> dict:
    """One evaluate_full result -> a flat row of numbers (the CSV's columns)."""
    row = {}
    for k, v in result.get("likelihood", {}).items():
        if isinstance(v, (int, float)) and k not in ("windows", "samples"):
            row[k] = v
    q = result.get("quality", {})
    row.update({k: v for k, v in q.items() if isinstance(v, (int, float))})
    for h, vals in q.get("horizons", {}).items():
        row.update({f"{k}@{h}": v for k, v in vals.items()})
    row.update({f"real_{k}": v for k, v in result.get("real", {}).items()})
    ev = result.get("evalnet", {})
    row.update({k: ev[k] for k in ("probe_error_px", "fid_floor") if k in ev})
    if "fid_floor" in row:
        row["frame_fid_floor"] = row.pop("fid_floor")
    cost = result.get("cost", {})
    row.update({k: v for k, v in cost.items() if isinstance(v, (int, float))})
    if "train_seconds_total" in cost:
        row["train_minutes"] = cost["train_seconds_total"] / 60
    return row


def aggregate(rows: list[dict]) -> dict[str, tuple[float, float, int]]:
    """Per column: (mean, sd over seeds, number of seeds), ignoring missing and non-finite values."""
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(float(r[k]))]
        if vals:
            out[k] = (float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals))
    return out


def best_models(summary: dict[str, dict], reference: dict) -> dict[str, set[str]]:
    """Column -> the model(s) with the best mean (ties all marked)."""
    best = {}
    for key, _, rule in COLUMNS:
        vals = {m: s[key][0] for m, s in summary.items() if key in s}
        if not rule or len(vals) < 2:
            continue
        if rule == "real":
            target = reference.get(REAL.get(key, ""))
            if target is None:
                continue
            score = {m: abs(v - target) for m, v in vals.items()}
        else:
            score = {m: (v if rule == "low" else -v) for m, v in vals.items()}
        top = min(score.values())
        best[key] = {m for m, v in score.items() if abs(v - top) <= 1e-12 * max(1.0, abs(top))}
    return best


def write_csv(path: Path, rows: list[dict], lead: list[str]) -> None:
    keys = lead + sorted({k for r in rows for k in r} - set(lead))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in keys})


def _csv_value(v):
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


# ----------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt
    return plt


def plot_training(curves: dict[str, list[list[dict]]], path: Path) -> Path:
    """Training loss and validation bits/pixel against wall-clock minutes, one colour per model,
    one line per seed. curves: model -> [metrics.jsonl rows of each seed]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (model, seeds) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for j, rows in enumerate(seeds):
            label = model if j == 0 else None
            loss = [(r["time"] / 60, r["loss"]) for r in rows if "loss" in r and "time" in r]
            val = [(r["time"] / 60, r["val_nelbo_bpp"]) for r in rows if "val_nelbo_bpp" in r]
            if loss:
                axes[0].plot(*zip(*loss), color=colour, lw=1, alpha=0.8, label=label)
            if val:
                axes[1].plot(*zip(*val), "o-", color=colour, lw=1, ms=3, alpha=0.8, label=label)
    axes[0].set(xlabel="training minutes", ylabel="training loss (model's own units)", title="training loss")
    axes[0].set_yscale("symlog", linthresh=1e-2)
    axes[1].set(xlabel="training minutes", ylabel="bits / pixel", title="validation negative ELBO")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_horizons(summary: dict[str, dict], horizons, reference: dict, path: Path) -> Path:
    """Metric against rollout horizon, mean ± sd over seeds; dashed grey line = real data."""
    plt = _pyplot()
    keys = [k for k in HORIZON_METRICS if any(f"{k}@{horizons[0]}" in s for s in summary.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (model, s) in enumerate(summary.items()):
            pts = [(h, *s[f"{key}@{h}"][:2]) for h in horizons if f"{key}@{h}" in s]
            if pts:
                h, m, sd = map(np.array, zip(*pts))
                ax.errorbar(h, m, yerr=sd, fmt="o-", color=f"C{i % 10}", ms=3, capsize=2, label=model)
        ref = reference.get({"frame_fid": "frame_fid_floor", "frame_fid_train": "frame_fid_floor", "fid_k": "fid_k_floor", "fid_g": "fid_g_floor"}
                            .get(key, f"real_{key}"))
        if ref is not None:
            ax.axhline(ref, color="grey", ls="--", lw=1, label="real data")
        ax.set(xscale="log", xlabel="horizon (frames)", title=key.replace("_", " "))
        ax.set_xticks(list(horizons), [str(h) for h in horizons])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- html
def _fmt(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    if abs(v) >= 1e5:
        return f"{v:.3g}"
    return f"{v:.4g}" if abs(v) < 100 else f"{v:.0f}"


def _fmt_pm(mean: float, sd: float) -> str:
    """mean ± sd, both rounded to the sd's first significant digit (0.07782 ± 7.3e-05 -> 0.07782 ± 0.00007)."""
    if mean is None or sd is None or not (math.isfinite(mean) and math.isfinite(sd)) or sd == 0 or abs(mean) >= 1e5:
        return f"{_fmt(mean)} ± {_fmt(sd)}"
    digits = min(6, max(0, -math.floor(math.log10(sd))))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def table_html(summary: dict[str, dict], reference: dict) -> str:
    best = best_models(summary, reference)
    head = "".join(f"<th>{html.escape(label)}{' ↓' if r == 'low' else ' ↑' if r == 'high' else ' ≈real' if r else ''}</th>"
                   for _, label, r in COLUMNS)
    rows = []
    for model, s in summary.items():
        cells = []
        for key, _, _ in COLUMNS:
            if key not in s:
                cells.append("<td>—</td>")
                continue
            mean, sd, n = s[key]
            mark = model in best.get(key, ())
            text = _fmt_pm(mean, sd) if n > 1 else _fmt(mean)
            cells.append(f'<td class="best">★ {text}</td>' if mark else f"<td>{text}</td>")
        rows.append(f'<tr class="model"><th>{html.escape(model)}</th>{"".join(cells)}</tr>')
    rows.append(_reference_row("real data", REAL, reference))
    if any(v in reference for v in REAL_TRAIN.values()):
        rows.append(_reference_row("real training segments", REAL_TRAIN, reference))
    return f'<table id="results"><thead><tr><th>model</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _reference_row(label: str, keys: dict[str, str], reference: dict) -> str:
    """A table row of real-data values: column -> keys[column] looked up in reference (blank if absent)."""
    cells = "".join(f"<td>{_fmt(reference[keys[k]]) if keys.get(k) in reference else ''}</td>" for k, _, _ in COLUMNS)
    return f'<tr class="reference"><th>{html.escape(label)}</th>{cells}</tr>'


CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 6px;text-align:right}
thead th{background:#f3f3f3;text-align:center}tbody th{text-align:left}td.best{background:#e5f5e0;font-weight:600}
tr.reference{color:#666;font-style:italic}.gallery{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;max-width:100%}figcaption{font-size:13px;text-align:center}img{image-rendering:pixelated;border:1px solid #ddd}
img.gif{width:400px}img.strip{width:220px}img.plot{max-width:100%}
.note{font-size:13px;color:#555;max-width:1000px}"""


def write_html(path: Path, title: str, summary: dict[str, dict], reference: dict, media: dict, notes: list[str]) -> Path:
    """The report page. media: {"gifs": [(label, file)], "strips": [(label, file)], "plots": [(label, file)]}."""
    def figures(items, cls=""):
        return "".join(f'<figure><img class="{cls}" src="{html.escape(f)}" alt="{html.escape(label)}">'
                       f"<figcaption>{html.escape(label)}</figcaption></figure>" for label, f in items)
    body = [f"<h1>{html.escape(title)}</h1>",
            "".join(f'<p class="note">{n}</p>' for n in notes),
            "<h2>Results</h2>", table_html(summary, reference),
            '<p class="note">Mean ± sd over seeds; ★ marks the best model per column (↓ lower is better, ↑ higher, '
            "≈real closest to the real data). The last row holds the real data's own values: the train-vs-test floor "
            "of each Fréchet distance, and real test segments for the rest; the row below it, the spread (Dist) of real "
            "training segments, which a short test block can fall well short of.</p>",
            "<h2>Dances from the same seed frames</h2>", '<div class="gallery">', figures(media["gifs"], "gif"), "</div>",
            "<h2>Frames 0 (seed), 1, 2 and 16</h2>", '<div class="gallery">', figures(media["strips"], "strip"), "</div>",
            "<h2>Training and horizons</h2>", '<div class="gallery">', figures(media["plots"], "plot"), "</div>",
            '<p class="note">All numbers: <a href="results.json">results.json</a>, '
            '<a href="results.csv">results.csv</a> (one row per run), <a href="summary.csv">summary.csv</a> '
            "(mean and sd per model).</p>"]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    path.write_text(page)
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2, default=float))
    return path
