"""Jang, Gu & Poole 2017, Table 1 (VAE rows) on binarized MNIST, with the library's gumbel-vae.

Each cell = one gradient estimator x one latent: SF (score function + NVIL), ST (straight-through
with the plain categorical sample), Gumbel-S., ST Gumbel-S.; categorical 20 x 10 or Bernoulli 200.
Protocol (Sec. 4.3 of the paper, and its authors' notebook):
  - fixed binarized MNIST, 50k train / 10k valid / 10k test; MLP 784-512-256-(latent)-256-512-784;
    learned categorical prior; Adam, learning rate 1e-3, batch 100;
  - tau = max(0.5, exp(-r t)), updated every N steps; (N, r) chosen on the validation split
    (--schedules; SF and ST have no temperature, so one run each); a schedule may also set its own
    floor (N:r:tau_min) to test how far the relaxed objective is from the one-hot one;
  - evaluation with one-hot samples: negative ELBO and the importance-weighted bound (Burda et al.
    2016, eq. 8) over 1000 samples on the test split, in nats, lower is better.
Training uses the model's forward() and evaluation its evaluate(): nothing is re-implemented here.
Beside the one-hot numbers, each run records its *training objective* (forward() without gradients:
the relaxed -ELBO at the final temperature for Gumbel-S., the hard one for the others) on validation
and test, and the one-hot -ELBO on 2000 training images, to split the gap to the paper into a
generalisation part and a relaxation part. The kept weights go to OUT/models/ (not committed).

Every finished cell is written to OUT/cell-<estimator>-<latent>.json and the table
(OUT/table.md, OUT/table.json) is rebuilt from all cell files present, so cells may run in
separate processes (e.g. two processes, --threads 1 each, different --only).

    nice -n 15 python benchmarks/mnist_table.py --minutes 30 --out benchmarks/results/mnist
    python benchmarks/mnist_table.py --only gumbel/categorical --minutes 2 --test-limit 500   # a pilot
    python benchmarks/mnist_table.py --table-only --out benchmarks/results/mnist
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from discodance.models import build_model, model_config

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "binarized_mnist.npz"
ESTIMATORS = {"sf": "score-function", "score-function": "score-function", "st": "st",
              "gumbel": "gumbel", "st-gumbel": "st-gumbel"}
COLUMNS = [("score-function", "SF"), ("st", "ST"), ("gumbel", "Gumbel-S."), ("st-gumbel", "ST Gumbel-S.")]
LATENTS = {"categorical": dict(latent="categorical", latents=20, classes=10),
           "bernoulli": dict(latent="bernoulli", latents=200, classes=2)}
PAPER = {("categorical", "score-function"): 110.6, ("categorical", "st"): 110.9,
         ("categorical", "gumbel"): 101.5, ("categorical", "st-gumbel"): 107.8,
         ("bernoulli", "score-function"): 112.2, ("bernoulli", "st"): 116.0,
         ("bernoulli", "gumbel"): 105.0, ("bernoulli", "st-gumbel"): 111.5}


# ----------------------------------------------------------------------------- data
def load_mnist(path: Path) -> dict[str, torch.Tensor]:
    """Split name -> (n, 1, 28, 28) uint8 {0, 1} images (rows are bit-packed in the file)."""
    with np.load(path) as f:
        return {k: torch.from_numpy(np.unpackbits(f[k], axis=1)[:, :784].reshape(-1, 1, 28, 28).copy())
                for k in ("train", "valid", "test")}


def spread_subset(x: torch.Tensor, limit: int | None) -> torch.Tensor:
    """At most `limit` evenly spaced rows (the test split is sorted by digit: a prefix would be one digit)."""
    if not limit or limit >= len(x):
        return x
    return x[torch.linspace(0, len(x) - 1, limit).round().long()]


# ----------------------------------------------------------------------------- one run
def make_model(estimator: str, latent: str, every: int, rate: float, tau_min: float = 0.5):
    overrides = dict(arch="mlp", context=1, horizon=0, prior="learned", estimator=estimator,
                     tau0=1.0, tau_min=tau_min, anneal_every=every, anneal_rate=rate, **LATENTS[latent])
    return build_model("gumbel-vae", model_config("gumbel-vae", (28, 28), overrides))


@torch.no_grad()
def evaluate(model, x: torch.Tensor, samples: int, seed: int, batch: int = 100, chunk: int = 250) -> dict:
    """Mean negative ELBO and importance-weighted bound (nats) over the rows of x."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    sums = {"nelbo": 0.0, "iwae": 0.0, "rec": 0.0, "kl": 0.0}
    for i in range(0, len(x), batch):
        out = model.evaluate(x[i:i + batch].float(), samples, g, chunk=min(chunk, samples))
        for k in sums:
            sums[k] += float(out[k].double().sum())
    model.train()
    return {k: v / len(x) for k, v in sums.items()} | {"examples": len(x), "samples": samples}


@torch.no_grad()
def training_objective(model, x: torch.Tensor, step: int, seed: int, batch: int = 500) -> float:
    """Mean -ELBO (nats) as forward() computes it at `step`: one sample of the estimator's own code
    (relaxed at that step's temperature for Gumbel-S., hard for the others) and the analytic KL."""
    model.eval()
    g, total = torch.Generator().manual_seed(seed), 0.0
    for i in range(0, len(x), batch):
        _, logs = model(x[i:i + batch].float(), step, g)
        total += (logs["rec_nats"] + logs["kl_nats"]) * len(x[i:i + batch])
    model.train()
    return total / len(x)


def train_run(args, estimator: str, latent: str, every: int, rate: float, tau_min: float, data: dict) -> dict:
    """Train one setting for --minutes of training time on --clock (or --steps); return its record.

    Only the training steps count against the budget (not the validation probes)."""
    torch.manual_seed(args.seed)
    model = make_model(estimator, latent, every, rate, tau_min)
    opts = {k: torch.optim.Adam(p, lr=args.lr, fused=True) for k, p in model.optimizer_groups().items()}
    noise, order_gen = torch.Generator().manual_seed(args.seed + 1), torch.Generator().manual_seed(args.seed + 2)
    train_x, val_probe = data["train"], spread_subset(data["valid"], 1000)
    budget, max_steps = (args.minutes * 60 if args.minutes else math.inf), (args.steps or math.inf)
    step, clock, order, acc = 0, {"wall": 0.0, "cpu": 0.0}, torch.empty(0, dtype=torch.long), []
    curve, best = [], (math.inf, None, 0)
    while step < max_steps and clock[args.clock] < budget:
        t0, c0 = time.perf_counter(), time.process_time()
        if len(order) < args.batch:
            order = torch.randperm(len(train_x), generator=order_gen)
        idx, order = order[:args.batch], order[args.batch:]
        lr = args.lr * (0.5 * (1 + math.cos(math.pi * min(clock[args.clock] / budget, 1.0))) if args.cosine else 1.0)
        logs = train_step(model, opts, train_x[idx].float(), step, noise, lr)
        step += 1
        clock["wall"] += time.perf_counter() - t0
        clock["cpu"] += time.process_time() - c0
        acc.append(logs["rec_nats"] + logs["kl_nats"])
        if step % args.log_every == 0 or step >= max_steps or clock[args.clock] >= budget:
            point = {"step": step, "train_seconds": round(clock["wall"], 1), "cpu_seconds": round(clock["cpu"], 1),
                     "train_loss_nats": float(np.mean(acc)), "tau": logs["tau"], "lr": lr,
                     "val_probe_nelbo": evaluate(model, val_probe, 10, 0)["nelbo"]}
            curve.append(point)
            acc = []
            if point["val_probe_nelbo"] < best[0]:
                best = (point["val_probe_nelbo"], {k: v.clone() for k, v in model.state_dict().items()}, step)
            print(f"  [{estimator}/{latent} N={every} r={rate:g} floor={tau_min:g}] step {step}  {point['train_seconds']:.0f}s "
                  f"({point['cpu_seconds']:.0f}s CPU)  train loss {point['train_loss_nats']:.1f}  "
                  f"val-probe -ELBO {point['val_probe_nelbo']:.1f}  tau {point['tau']:.3f}", flush=True)
    if args.keep_best and best[1] is not None:
        model.load_state_dict(best[1])
    return {"estimator": estimator, "latent": latent, "anneal_every": every, "anneal_rate": rate,
            "tau_min": tau_min, "steps": step, "train_seconds": clock["wall"], "cpu_seconds": clock["cpu"],
            "seconds_per_1k_steps": 1000 * clock["wall"] / max(step, 1),
            "cpu_seconds_per_1k_steps": 1000 * clock["cpu"] / max(step, 1),
            "steps_per_second": step / max(clock["wall"], 1e-9),
            "kept_step": best[2] if args.keep_best else step, "curve": curve, "model": model}


def train_step(model, opts, x, step, noise, lr) -> dict:
    """One Adam step per optimizer group (score-function also trains NVIL's baseline)."""
    loss, logs = model(x, step, noise)
    losses = loss if isinstance(loss, dict) else {"model": loss}
    groups = model.optimizer_groups()
    for name, value in losses.items():
        opts[name].zero_grad(set_to_none=True)
        value.backward(inputs=groups[name])
    for name in losses:
        for g in opts[name].param_groups:
            g["lr"] = lr
        opts[name].step()
    return logs


# ----------------------------------------------------------------------------- one cell
def schedules_for(estimator: str, grid: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """SF and ST never use the temperature: one run with the first schedule (recorded, unused)."""
    return grid if estimator in ("gumbel", "st-gumbel") else grid[:1]


def run_cell(args, estimator: str, latent: str, data: dict) -> dict:
    runs, best = [], None
    val_x, train_probe = spread_subset(data["valid"], args.val_limit), spread_subset(data["train"], 2000)
    for every, rate, tau_min in schedules_for(estimator, args.schedules):
        run = train_run(args, estimator, latent, every, rate, tau_min, data)
        run["valid"] = evaluate(run["model"], val_x, args.val_samples, seed=1)
        run["valid"]["training_objective"] = training_objective(run["model"], val_x, run["steps"], seed=3)
        run["train_probe"] = evaluate(run["model"], train_probe, 10, seed=4)
        run["train_probe"]["training_objective"] = training_objective(run["model"], train_probe, run["steps"], seed=5)
        print(f"  valid ({len(val_x)} ex, {args.val_samples} samples): -ELBO {run['valid']['nelbo']:.2f}  "
              f"IW bound {run['valid']['iwae']:.2f}  training objective {run['valid']['training_objective']:.2f}; "
              f"2000 training images: -ELBO {run['train_probe']['nelbo']:.2f}, training objective "
              f"{run['train_probe']['training_objective']:.2f}  ({run['steps']} steps, {run['train_seconds']:.0f}s)",
              flush=True)
        if best is None or run["valid"][args.select] < best["valid"][args.select]:
            best = run
        runs.append(run)
    t0 = time.perf_counter()
    test_x = spread_subset(data["test"], args.test_limit)
    test = evaluate(best["model"], test_x, args.test_samples, seed=2)
    test["seconds"] = time.perf_counter() - t0
    test["training_objective"] = training_objective(best["model"], test_x, best["steps"], seed=6)
    save_weights(best["model"], args.out / "models" / f"cell-{estimator}-{latent}.pt")
    print(f"  TEST ({test['examples']} ex, {args.test_samples} samples): -ELBO {test['nelbo']:.2f}  "
          f"IW bound {test['iwae']:.2f}  training objective {test['training_objective']:.2f}  "
          f"[paper {PAPER[(latent, estimator)]}]", flush=True)
    for r in runs:
        r.pop("model")
    return {"estimator": estimator, "latent": latent, "selected": {"anneal_every": best["anneal_every"],
            "anneal_rate": best["anneal_rate"], "tau_min": best["tau_min"]}, "test": test, "paper_nelbo": PAPER[(latent, estimator)],
            "runs": runs, "settings": settings(args), "threads": torch.get_num_threads()}


def save_weights(model, path: Path) -> None:
    """The kept state dict (plain tensors, loadable with weights_only=True), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, path)


def settings(args) -> dict:
    keys = ("minutes", "clock", "steps", "batch", "lr", "cosine", "seed", "val_limit", "val_samples",
            "test_limit", "test_samples", "select", "keep_best", "log_every")
    return {k: getattr(args, k) for k in keys} | {"schedules": args.schedules}


# ----------------------------------------------------------------------------- table
def write_table(out: Path) -> str:
    cells = {(c["latent"], c["estimator"]): c for c in map(lambda p: json.loads(p.read_text()),
                                                            sorted(out.glob("cell-*.json")))}
    head = "| latent | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = ["Test split, nats, lower is better. Each entry: **ours: 1000-sample IW bound / -ELBO** "
             "(paper's -ELBO); then training steps (the checkpoint kept by the validation probe) and training time "
             "(CPU time of the process, one thread, and wall time).", "",
             head, "|---" * (len(COLUMNS) + 1) + "|"]
    for latent, label in (("categorical", "categorical 20x10"), ("bernoulli", "Bernoulli 200")):
        row = []
        for est, _ in COLUMNS:
            c = cells.get((latent, est))
            if c is None:
                row.append(f"pending ({PAPER[(latent, est)]})")
                continue
            run = next(r for r in c["runs"] if all(r.get(k, 0.5) == v for k, v in c["selected"].items()))
            t = c["test"]
            row.append(f"**{t['iwae']:.1f} / {t['nelbo']:.1f}** ({c['paper_nelbo']}); "
                       f"{run['steps']} steps (kept {run['kept_step']}), {run['cpu_seconds'] / 60:.1f} CPU min "
                       f"/ {run['train_seconds'] / 60:.1f} wall min")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    partial = [f"{e}/{l}: {c['test']['examples']} test examples, {c['test']['samples']} samples"
               for (l, e), c in cells.items() if c["test"]["examples"] < 10000 or c["test"]["samples"] < 1000]
    if partial:
        lines += ["", "Not the full protocol (pilot): " + "; ".join(partial) + "."]
    lines += gap_table(cells)
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    (out / "table.json").write_text(json.dumps({f"{e}/{l}": c for (l, e), c in cells.items()}, indent=1))
    return text


def gap_table(cells: dict) -> list[str]:
    """Where the distance to the paper comes from: one-hot -ELBO on training images, validation and
    test, and the training objective (relaxed for Gumbel-S.) on test. Cells from runs that predate
    these probes show a dash."""
    lines = ["", "Where the gap comes from (nats; one-hot -ELBO unless marked): 2000 training images (10 samples) "
             "-> validation (10k, 100 samples) -> test (10k, 1000 samples); then the training objective on "
             "test (relaxed sample at the final temperature for Gumbel-S., the same one-hot number otherwise). "
             "≈: no training probe in that run; the mean training-batch loss over the log interval that ends at "
             "the kept checkpoint, which for one-hot forward passes is the one-hot -ELBO of a model still moving.", "",
             "| cell | train | valid | test | test, training objective | paper |", "|---|---|---|---|---|---|"]
    order = [(l, e) for l in LATENTS for e, _ in COLUMNS]
    for (latent, est), c in sorted(cells.items(), key=lambda kv: order.index(kv[0])):
        run = next(r for r in c["runs"] if all(r.get(k, 0.5) == v for k, v in c["selected"].items()))
        probe, test = run.get("train_probe", {}), c["test"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        train = fmt(probe.get("nelbo"))
        if "nelbo" not in probe and est != "gumbel":   # one-hot forward: the training loss is that -ELBO
            train = "≈" + fmt(next(q["train_loss_nats"] for q in run["curve"] if q["step"] == run["kept_step"]))
        lines.append(f"| {est} / {latent} | {train} | {fmt(run['valid']['nelbo'])} | "
                     f"{fmt(test['nelbo'])} | {fmt(test.get('training_objective'))} | {c['paper_nelbo']} |")
    return lines


# ----------------------------------------------------------------------------- CLI
def parse_cells(only: str | None) -> list[tuple[str, str]]:
    """'gumbel/categorical,sf' -> [(gumbel, categorical), (score-function, categorical), (score-function, bernoulli)]."""
    every = [(e, l) for l in LATENTS for e, _ in COLUMNS]
    if not only:
        return every
    chosen = []
    for item in only.split(","):
        parts = item.strip().split("/")
        est = [ESTIMATORS[p] for p in parts if p in ESTIMATORS]
        lat = [p for p in parts if p in LATENTS]
        if len(est) + len(lat) != len(parts):
            raise SystemExit(f"--only: cannot read {item!r} (estimators: {', '.join(ESTIMATORS)}; latents: {', '.join(LATENTS)})")
        chosen += [(e, l) for e, l in every if (not est or e in est) and (not lat or l in lat) and (e, l) not in chosen]
    return chosen


def parse_schedules(text: str) -> list[tuple[int, float, float]]:
    """'1000:1e-4,1000:1e-5:0.2' -> [(1000, 1e-4, 0.5), (1000, 1e-5, 0.2)]: N, r and the floor (default 0.5)."""
    out = []
    for item in text.split(","):
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            every, rate, floor = int(parts[0]), float(parts[1]), float(parts[2]) if len(parts) == 3 else 0.5
        except ValueError:
            raise argparse.ArgumentTypeError(f"schedule {item!r}: expected N:r or N:r:tau_min, e.g. 1000:1e-4:0.5")
        if every < 1 or rate < 0 or floor <= 0:
            raise argparse.ArgumentTypeError(f"schedule {item!r}: need N >= 1, r >= 0, tau_min > 0")
        out.append((every, rate, floor))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/mnist"))
    p.add_argument("--only", help="cells: est/latent, est or latent, comma-separated (est: sf st gumbel st-gumbel)")
    p.add_argument("--minutes", type=float, default=30.0, help="training time per run (0 = no limit)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="what --minutes counts: this process's CPU time in training steps (default; steady on a "
                        "shared machine) or their wall time")
    p.add_argument("--steps", type=int, default=0, help="step limit per run (0 = no limit)")
    p.add_argument("--schedules", type=parse_schedules, default=parse_schedules("1000:1e-4,1000:1e-5"),
                   help="N:r[:tau_min] temperature schedules selected on validation (relaxed estimators; floor 0.5 by default)")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--cosine", action="store_true", help="cosine-decay the learning rate over the time budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=2000)
    p.add_argument("--select", choices=("iwae", "nelbo"), default="iwae")
    p.add_argument("--last", dest="keep_best", action="store_false",
                   help="keep the final weights (default: the logged checkpoint with the best validation-probe "
                        "-ELBO: 1000 evenly spaced validation images, 10 samples, fixed noise)")
    p.add_argument("--val-limit", type=int, default=0, help="validation examples (0 = all 10k)")
    p.add_argument("--val-samples", type=int, default=100)
    p.add_argument("--test-limit", type=int, default=0, help="test examples, evenly spaced (0 = all 10k)")
    p.add_argument("--test-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine, 2 threads can be 10x slower when a "
                        "core is taken; run two cells in parallel instead; 0 = torch's default)")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from the cell files")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table_only:
        print(write_table(args.out))
        return
    if not args.minutes and not args.steps:
        raise SystemExit("give --minutes or --steps: a run needs an end")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_mnist(args.data)
    print("MNIST: " + ", ".join(f"{k} {len(v)}" for k, v in data.items()) + f"; torch threads {torch.get_num_threads()}")
    for est, lat in parse_cells(args.only):
        print(f"== {est} / {lat}", flush=True)
        cell = run_cell(args, est, lat, data)
        path = args.out / f"cell-{est}-{lat}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cell, indent=1))
        os.replace(tmp, path)
        print(write_table(args.out), flush=True)


if __name__ == "__main__":
    main()
