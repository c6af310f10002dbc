"""How varied the real test block is next to the real training segments: Dist_k / Dist_g (mean
pairwise distance of standardised kinetic / geometric features, as `evaluate --full` computes
them) of real test segments and of real training segments. A prior that ranges over the moves it
learnt has the training segments' spread; a short test block of each take can have much less.

    python benchmarks/real_spread.py DATA [DATA ...]
"""
from __future__ import annotations

import argparse

from discodance.data.dataset import load_dataset
from discodance.evaluation import full
from discodance.evaluation.evalnet import load_or_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    args = ap.parse_args()
    cfg = full.FullEvalConfig()
    for path in args.data:
        ds = load_dataset(path)
        net, ref = load_or_train(ds, cfg.evalnet)
        joints = full.probe_skeleton(ds, ref)
        real = full.real_reference(ds, net, ref, cfg, "cpu")
        if real["test"] is None or real["train"] is None or "joints" not in ref:
            print(f"{path}: no pose probe or no test/train segments")
            continue
        block = lambda split: full.motion_block(real[split]["poses"], real[split]["frames"], joints, ds.fps, cfg,
                                                ds.frame_size[0])
        test, train = block("test"), block("train")
        out = full.compare_motion(test, test, train)
        for k in ("k", "g"):
            if f"real_dist_{k}" in out:
                te, tr = out[f"real_dist_{k}"], out[f"real_train_dist_{k}"]
                print(f"{path}: Dist_{k} test segments {te:.3f} ({len(test['kinetic'])}), training segments "
                      f"{tr:.3f} ({len(train['kinetic'])}): {tr / te:.2f}x")


if __name__ == "__main__":
    main()
