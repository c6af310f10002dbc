"""Where a decode's time goes: the default conv decoder block by block, the encoder, the prior's
distilled fast block, and float32 against bfloat16 autocast, at one batch size, in one process.

Freshly initialised networks of the default gumbel-vae's sizes (timing does not depend on the
weights). Median of --rounds, milliseconds per batch and per frame.

    OMP_NUM_THREADS=1 python benchmarks/decoder_layers.py [--size 64 64] [--batch 64] [--rounds 10]
        [--channels 16 32 64 128 --hidden 256] [--fast-channels 8] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from discodance.models.blocks import ConvDecoder, ConvEncoder
from discodance.models.fast_decoder import FastTop, cpu_has_bfloat16, decode_fast
from discodance.models.gumbel_vae import GumbelVAEConfig


def median_ms(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fast-channels", type=int, default=8)
    ap.add_argument("--channels", type=int, nargs="+", help="conv channels (default: the gumbel-vae's; "
                    "the demo and compare use 16 32 64 128 with --hidden 256)")
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--json")
    args = ap.parse_args()
    v = GumbelVAEConfig(frame_size=tuple(args.size))
    v.channels, v.hidden = tuple(args.channels or v.channels), args.hidden or v.hidden
    code_dim = v.latents * v.classes
    dec = ConvDecoder(code_dim, v.frame_size, channels=v.channels, hidden=v.hidden).eval()
    enc = ConvEncoder(v.context, v.frame_size, code_dim, channels=v.channels, hidden=v.hidden).eval()
    fast = FastTop(dec.trunk_channels, args.fast_channels).eval()
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.one_hot(torch.randint(0, v.classes, (args.batch, v.latents), generator=g), v.classes)
    z = z.float().flatten(1)
    x = (torch.rand(args.batch, v.context, *v.frame_size, generator=g) > 0.9).float()
    feats = dec.trunk(z)
    top = dec.last_block
    rows = {
        "encoder": median_ms(lambda: enc(x), args.rounds),
        "decoder": median_ms(lambda: dec(z), args.rounds),
        "decoder: all but the last block": median_ms(lambda: dec.trunk(z), args.rounds),
        "decoder: last block (transposed conv)": median_ms(lambda: top[0](feats), args.rounds),
        "decoder: last block (all)": median_ms(lambda: top(feats), args.rounds),
        f"fast block ({args.fast_channels} maps)": median_ms(lambda: fast(feats), args.rounds),
        "decoder with the fast block": median_ms(lambda: decode_fast(dec, fast, z), args.rounds),
    }
    with torch.autocast("cpu", torch.bfloat16):
        rows["decoder, bfloat16 autocast"] = median_ms(lambda: dec(z), max(1, args.rounds // 5))
    print(f"batch {args.batch}, {tuple(args.size)}, {torch.get_num_threads()} thread(s), "
          f"native bfloat16: {cpu_has_bfloat16()}\n| part | ms per batch | ms per frame |\n|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {ms / args.batch:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": "python benchmarks/decoder_layers.py " + " ".join(
                f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                for k, v in vars(args).items() if v is not None),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "native_bfloat16": cpu_has_bfloat16(),
            "machine": platform.processor() or platform.machine(), "ms_per_batch": rows}, indent=1))


if __name__ == "__main__":
    main()
