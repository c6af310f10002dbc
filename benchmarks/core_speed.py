"""Speed and memory of the demo configuration: training frames/s, rollout frames/s (batch 1 and 64),
peak resident memory of each phase (each phase runs in a fresh process so the peaks are its own).

    python benchmarks/core_speed.py [--steps 60] [--json benchmarks/results/core_speed.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def phase(name: str, steps: int) -> dict:
    import torch
    from discodance.data.synthetic import make_dancer
    from discodance.demo import DEMO_MODEL
    from discodance.models import build_model, model_config
    from discodance.config import TrainConfig
    from discodance.train import make_optimizers, step_generator

    torch.manual_seed(0)
    model = build_model("gumbel-vae", model_config("gumbel-vae", (64, 64), DEMO_MODEL))
    frames, _, _ = make_dancer(2000, 64, 64, seed=0)
    data = torch.from_numpy(frames).float().div(255)
    result = {"phase": name, "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in model.parameters())}
    if name == "train":
        cfg = TrainConfig()
        opt = make_optimizers(model, cfg)["model"]
        b = cfg.batch_size
        def one(step):
            w = model.window
            idx = torch.randint(0, len(data) - w + 1, (b,), generator=torch.Generator().manual_seed(step))
            batch = torch.stack([data[idx + k] for k in range(w)], 1)              # (B, window, H, W)
            loss, _ = model(batch, step=step, generator=step_generator(0, step))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        for s in range(5):
            one(s)
        t = time.perf_counter()
        for s in range(steps):
            one(s)
        dt = time.perf_counter() - t
        # one training example is a window of `w` frames (2 encoder frames + the next frame)
        result.update(batch_size=b, steps=steps, seconds=dt, rate=b * steps / dt, unit="windows/s")
    else:
        b = int(name.removeprefix("rollout"))
        model.eval()
        seed = torch.stack([data[k:k + b] for k in range(model.seed_frames)], 1)   # (B, seed_frames, H, W)
        model.rollout(seed, 2, torch.Generator().manual_seed(0))
        n = max(8, steps // 2)
        t = time.perf_counter()
        model.rollout(seed, n, torch.Generator().manual_seed(0))
        dt = time.perf_counter() - t
        result.update(batch_size=b, steps=n, seconds=dt, rate=b * n / dt, unit="generated frames/s")
    from discodance.train import peak_rss_mb
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--json", default="benchmarks/results/core_speed.json")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.steps)))
        return
    rows = []
    for name in ("train", "rollout1", "rollout64"):
        out = subprocess.run([sys.executable, __file__, "--phase", name, "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    import torch
    info = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
            "config": "demo gumbel-vae, 64x64, N=32 K=16, context 2, channels 16-32-64-128, hidden 256", "results": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(info, indent=2))
    print(f"{'phase':10} {'batch':>5} {'rate':>10} {'unit':18} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['phase']:10} {r['batch_size']:>5} {r['rate']:>10.1f} {r['unit']:18} {r['peak_rss_mb']:>12.0f}")


if __name__ == "__main__":
    main()
