"""Training and generation throughput, measured side by side in one process (issue 16).

1. MLP Gumbel-VAE on binarized MNIST (Jang et al. 2017, Sec. 4.3: 784-512-256-(20x10)-256-512-784,
   batch 100): samples/s of a plain PyTorch reference loop written from the paper's description
   (nn.Linear + ReLU, a relaxed Gumbel-Softmax sample, the analytic KL to a uniform prior, Adam,
   nothing else) against the library's own `train_step` (discodance.train) on the same model
   sizes, data, batch and threads. Rounds interleave the two; the figure is the median over rounds.
2. The conv gumbel-vae's training step at the demo's size: FLOPs counted with
   torch.utils.flop_counter.FlopCounterMode, achieved FLOP/s against a 1024x1024 float32 matmul
   timed in the same run at the same threads.
3. Rollout frames/s of the report's chain and of VAE + transformer prior at batch 1 and 64 (trained
   runs when --runs is given, else freshly initialised models of the demo's sizes).

    python benchmarks/throughput.py [--threads 1,2] [--rounds 5] [--out benchmarks/results/throughput]

Writes OUT.json and OUT.md. The machine is shared: only ratios measured in one run mean anything.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from discodance.config import TrainConfig
from discodance.models import build_model, model_config
from discodance.train import make_optimizers, train_step

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "binarized_mnist.npz"
LATENTS, CLASSES, BATCH, TAU = 20, 10, 100, 1.0


def load_mnist_train(path: Path) -> torch.Tensor:
    """(50000, 1, 28, 28) float {0, 1} training images (rows are bit-packed in the file)."""
    with np.load(path) as f:
        bits = np.unpackbits(f["train"], axis=1)[:, :784]
    return torch.from_numpy(bits.reshape(-1, 1, 28, 28).astype(np.float32))


# ----------------------------------------------------------------------------- the reference loop
class ReferenceVAE(nn.Module):
    """The paper's MLP VAE as a user writes it from the description: nothing but nn.Linear + ReLU."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                                     nn.Linear(256, LATENTS * CLASSES))
        self.decoder = nn.Sequential(nn.Linear(LATENTS * CLASSES, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(),
                                     nn.Linear(512, 784))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(len(x), 784)
        logits = self.encoder(x).view(-1, LATENTS, CLASSES)                       # (B, N, K)
        u = torch.rand_like(logits)
        y = F.softmax((logits - torch.log(-torch.log(u + 1e-20) + 1e-20)) / TAU, dim=-1)   # relaxed sample (eq. 2)
        recon = self.decoder(y.view(len(x), -1))                                  # (B, 784) logits
        rec = F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / len(x)
        q = F.softmax(logits, -1)
        kl = (q * (torch.log(q + 1e-20) - np.log(1.0 / CLASSES))).sum() / len(x)  # KL(q || uniform)
        return rec + kl


def reference_stepper(data: torch.Tensor):
    model = ReferenceVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(idx: torch.Tensor) -> None:
        loss = model(data[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def library_stepper(data: torch.Tensor, **train_sets):
    cfg = TrainConfig(batch_size=BATCH, **train_sets)
    model = build_model("gumbel-vae", model_config("gumbel-vae", (28, 28), {
        "arch": "mlp", "context": "1", "horizon": "0", "latents": str(LATENTS), "classes": str(CLASSES)}))
    optimizers = make_optimizers(model, cfg)
    state = {"step": 0}

    def step(idx: torch.Tensor) -> None:
        train_step(model, model, optimizers, data[idx], state["step"], cfg, 0)    # (B, 1, 28, 28) = one-frame windows
        state["step"] += 1
    return step


def mlp_rounds(data: torch.Tensor, steps: int, rounds: int) -> dict:
    """samples/s of each loop per round, interleaved, after a warm-up."""
    steppers = {"reference": reference_stepper(data), "library": library_stepper(data)}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(data), (BATCH,), generator=g) for _ in range(steps)]
    for s in steppers.values():
        for idx in batches[:5]:
            s(idx)
    rates = {k: [] for k in steppers}
    for _ in range(rounds):
        for name, s in steppers.items():
            t0 = time.perf_counter()
            for idx in batches:
                s(idx)
            rates[name].append(BATCH * steps / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"samples_per_s": med, "rounds": rates, "library_over_reference": med["library"] / med["reference"]}


# ----------------------------------------------------------------------------- conv step vs matmul
def matmul_flops_per_s(size: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size ** 3 * reps / (time.perf_counter() - t0)


def conv_stepper(frames: torch.Tensor):
    """The library's training step of the conv gumbel-vae at the demo's size on dancer windows."""
    from discodance.demo import DEMO_MODEL
    cfg = TrainConfig()
    model = build_model("gumbel-vae", model_config("gumbel-vae", tuple(frames.shape[-2:]), DEMO_MODEL))
    optimizers = make_optimizers(model, cfg)
    w, state = model.window, {"step": 0}
    g = torch.Generator().manual_seed(0)

    def batch() -> torch.Tensor:
        idx = torch.randint(0, len(frames) - w + 1, (cfg.batch_size,), generator=g)
        return torch.stack([frames[idx + k] for k in range(w)], 1)              # (B, window, H, W)

    def step(b: torch.Tensor) -> None:
        train_step(model, model, optimizers, b, state["step"], cfg, 0)
        state["step"] += 1
    return step, batch, cfg.batch_size, model


@contextlib.contextmanager
def dense_pixel_heads(model: torch.nn.Module):
    """Count a PixelHead as the dense 3x3 convolution it computes. FlopCounterMode counts the
    backward of its depthwise (grouped) convolution as if it were not grouped, 16x too many FLOPs
    at the demo's size (8.44 instead of 7.31 GFLOP per step); the FLOPs of the operation are the
    same either way."""
    from discodance.models import blocks
    heads = [m for m in model.modules() if isinstance(m, getattr(blocks, "PixelHead", ()))]   # none before it existed
    for head in heads:
        head.forward = partial(torch.nn.Conv2d.forward, head)
    try:
        yield
    finally:
        for head in heads:
            del head.forward


def conv_rate(frames: torch.Tensor, steps: int, rounds: int) -> dict:
    """FLOPs of one training step (forward + backward, FlopCounterMode), the step's achieved FLOP/s
    and a 1024 x 1024 float32 matmul's, interleaved over rounds."""
    from torch.utils.flop_counter import FlopCounterMode
    step, batch, batch_size, model = conv_stepper(frames)
    batches = [batch() for _ in range(steps)]
    counter = FlopCounterMode(display=False)
    with counter, dense_pixel_heads(model):
        step(batches[0])
    flops = counter.get_total_flops()
    for b in batches[:3]:
        step(b)
    conv, mm = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for b in batches:
            step(b)
        conv.append(flops * steps / (time.perf_counter() - t0))
        mm.append(matmul_flops_per_s())
    c, m = statistics.median(conv), statistics.median(mm)
    return {"step_flops": flops, "batch_size": batch_size, "step_flop_per_s": c, "matmul_flop_per_s": m,
            "share_of_matmul": c / m, "rounds_step": conv, "rounds_matmul": mm}


# ----------------------------------------------------------------------------- rollouts
def rollout_models(runs: list[str] | None, frames: torch.Tensor) -> dict:
    """{"chain": gumbel-vae, "prior": code-prior}: trained runs, or fresh models of the demo's sizes."""
    from discodance.checkpoint import load_checkpoint
    from discodance.demo import DEMO_MODEL
    from discodance.models import load_model
    if runs:
        return {name: load_model(load_checkpoint(Path(run) / "checkpoint.pt")).eval() for name, run in zip(("chain", "prior"), runs)}
    torch.manual_seed(0)
    size = tuple(frames.shape[-2:])
    vae = build_model("gumbel-vae", model_config("gumbel-vae", size, DEMO_MODEL))
    prior = build_model("code-prior", model_config("code-prior", size, {"base_config": dataclasses.asdict(vae.config)}))
    return {"chain": vae.eval(), "prior": prior.eval()}


@torch.no_grad()
def rollout_rates(models: dict, frames: torch.Tensor, steps: int, rounds: int, batches=(1, 64)) -> dict:
    """Generated frames/s of each model at each batch size: median of interleaved rounds."""
    seeds = {(name, b): torch.stack([frames[k:k + b] for k in range(m.seed_frames)], 1)
             for name, m in models.items() for b in batches}                    # (B, seed_frames, H, W)
    for (name, b), seed in seeds.items():
        models[name].rollout(seed, 8, torch.Generator().manual_seed(0))         # warm-up
    rates = {key: [] for key in seeds}
    for _ in range(rounds):
        for (name, b), seed in seeds.items():
            t0 = time.perf_counter()
            models[name].rollout(seed, steps, torch.Generator().manual_seed(0))
            rates[(name, b)].append(b * steps / (time.perf_counter() - t0))
    out = {f"{name}@{b}": statistics.median(r) for (name, b), r in rates.items()}
    for b in batches:
        out[f"prior_over_chain@{b}"] = out[f"prior@{b}"] / out[f"chain@{b}"]
    out.update(codec_times(models, frames, rounds, batches))
    return out


@torch.no_grad()
def codec_times(models: dict, frames: torch.Tensor, rounds: int, batches=(1, 64), reps: int = 8) -> dict:
    """Milliseconds per frame of the chain's two halves (encode, decode) at each batch size and of
    the prior's decode (it decodes a rollout's frames in chunks of DECODE_CHUNK at any batch size),
    and the bound they put on prior / chain: a chain step costs at least encode + decode, a prior
    step at least its decode, so prior / chain <= (encode + decode) / prior's decode however fast
    the prior samples its codes."""
    from discodance.models.code_prior import DECODE_CHUNK
    vae, prior = models["chain"], models["prior"]
    N, K, c = vae.config.latents, vae.config.classes, vae.seed_frames
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, K, (1, DECODE_CHUNK, N), generator=g)             # one rollout's chunk
    jobs = {"prior_decode_ms": (lambda: prior.decode_codes(codes), DECODE_CHUNK)}
    for b in batches:
        x = torch.stack([frames[k:k + b] for k in range(c)], 1)                # (b, context, H, W)
        z = torch.nn.functional.one_hot(torch.randint(0, K, (b, N), generator=g), K).float()   # (b, N, K)
        jobs.update({f"encode_ms@{b}": (lambda x=x: vae.encode(x), b), f"decode_ms@{b}": (lambda z=z: vae.decode(z), b)})
    for fn, _ in jobs.values():
        fn()                                                                     # warm-up
    times = {key: [] for key in jobs}
    for _ in range(rounds):
        for key, (fn, b) in jobs.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[key].append(1e3 * (time.perf_counter() - t0) / (reps * b))
    out = {key: statistics.median(t) for key, t in times.items()}
    for b in batches:
        out[f"prior_over_chain_bound@{b}"] = (out[f"encode_ms@{b}"] + out[f"decode_ms@{b}"]) / out["prior_decode_ms"]
    return out


# ----------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    """The README's speed table from one run's result."""
    lines = [f"torch {result['torch']}, {result['machine']}, median of {result['rounds']} interleaved rounds; "
             f"`{result['command']}`", "",
             "| threads | MLP step: reference loop | MLP step: library | library ÷ reference | conv step (demo size) "
             "| 1024² float32 matmul | conv ÷ matmul | chain @1 | prior @1 | chain @64 | prior @64 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t, mlp in result["mlp"].items():
        conv, roll = result.get("conv", {}).get(t), result.get("rollout", {}).get(t)
        cells = [t, f"{mlp['samples_per_s']['reference']:,.0f} samples/s", f"{mlp['samples_per_s']['library']:,.0f} samples/s",
                 f"**{mlp['library_over_reference']:.2f}×**"]
        cells += ([f"{conv['step_flop_per_s'] / 1e9:.1f} GFLOP/s", f"{conv['matmul_flop_per_s'] / 1e9:.1f} GFLOP/s",
                   f"**{conv['share_of_matmul']:.0%}**"] if conv else ["", "", ""])
        cells += ([f"{roll[k]:,.0f}" for k in ("chain@1", "prior@1", "chain@64", "prior@64")] if roll else [""] * 4)
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Rollouts in generated frames/s (prior ÷ chain: " + ", ".join(
        f"{t} thread(s): {r['prior_over_chain@1']:.2f}× at batch 1, {r['prior_over_chain@64']:.2f}× at 64"
        for t, r in result.get("rollout", {}).items()) + ")."]
    for t, r in result.get("rollout", {}).items():
        if "encode_ms@64" in r:
            lines.append(f"{t} thread(s), ms per frame at batch 1 / 64: the chain's encode "
                         f"{r['encode_ms@1']:.2f} / {r['encode_ms@64']:.2f} and decode {r['decode_ms@1']:.2f} / "
                         f"{r['decode_ms@64']:.2f}, the prior's decode {r['prior_decode_ms']:.2f} (in chunks of 64 at "
                         f"any batch size): prior ÷ chain can be at most "
                         f"{r['prior_over_chain_bound@1']:.2f}× / {r['prior_over_chain_bound@64']:.2f}×.")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50, help="training steps per loop and round")
    ap.add_argument("--conv-steps", type=int, default=10, help="conv training steps per round (0: skip)")
    ap.add_argument("--rollout-steps", type=int, default=128, help="frames per rollout and round (0: skip)")
    ap.add_argument("--runs", nargs=2, metavar=("GUMBEL_VAE_RUN", "CODE_PRIOR_RUN"),
                    help="trained runs to roll out (default: fresh models of the demo's sizes)")
    ap.add_argument("--out", default="benchmarks/results/throughput")
    args = ap.parse_args()
    data = load_mnist_train(MNIST)
    frames = None
    if args.conv_steps or args.rollout_steps:
        from discodance.data.synthetic import make_dancer
        frames = torch.from_numpy(make_dancer(2000, 64, 64, seed=0)[0]).float().div(255)
    import sys
    result = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rounds": args.rounds,
              "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]), "mlp": {}}
    models = rollout_models(args.runs, frames) if args.rollout_steps else None
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        result["mlp"][threads] = mlp_rounds(data, args.steps, args.rounds)
        print(threads, json.dumps(result["mlp"][threads]["samples_per_s"]),
              f"{result['mlp'][threads]['library_over_reference']:.2f}x", flush=True)
        if frames is not None:
            result.setdefault("conv", {})[threads] = conv_rate(frames, args.conv_steps, args.rounds)
            c = result["conv"][threads]
            print(f"conv step {c['step_flop_per_s'] / 1e9:.1f} GFLOP/s, matmul {c['matmul_flop_per_s'] / 1e9:.1f}: "
                  f"{c['share_of_matmul']:.0%}", flush=True)
        if args.rollout_steps:
            result.setdefault("rollout", {})[threads] = rollout_rates(models, frames, args.rollout_steps, args.rounds)
            print("rollout frames/s", json.dumps({k: round(v, 2) for k, v in result["rollout"][threads].items()}), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out.with_suffix(".json"), json.dumps(result, indent=1))
    write_atomic(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
