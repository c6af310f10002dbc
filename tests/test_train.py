"""The training loop: exact resume, safe checkpoints, data order, and DDP gradient equivalence."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from discodance.config import TrainConfig
from discodance.errors import DiscodanceError
from discodance.checkpoint import load_checkpoint
from discodance.models import load_model as model_from_checkpoint
from discodance.train import global_batch_indices, rank_slice, train

from conftest import TINY_MODEL

FAST = dict(batch_size=8, eval_every=4, ckpt_every=4, log_every=2, eval_batches=1, warmup_steps=2)


def _metric_lines(run):
    drop = {"time", "cpu_seconds", "frames_per_s", "max_rss_mb"}
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    cfg = TrainConfig(steps=12, **FAST)
    full = tmp_path / "full"
    train(tiny_data, full, "gumbel-vae", TINY_MODEL, cfg, progress=False)
    killed = tmp_path / "killed"
    train(tiny_data, killed, "gumbel-vae", TINY_MODEL, cfg, stop_at=6, progress=False)
    assert load_checkpoint(killed)["step"] == 4  # the last periodic checkpoint before the "kill"
    # the killed process also logged steps 5 and 6; resuming from step 4 must drop that tail
    train(tiny_data, killed, cfg=cfg, resume=True, progress=False)
    a, b = load_checkpoint(full), load_checkpoint(killed)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert _metric_lines(full) == _metric_lines(killed)


def test_checkpoint_is_plain_data_and_reloads(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=3, **FAST), progress=False)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # no pickled code needed
    assert ckpt["config"]["model"] == "gumbel-vae" and ckpt["step"] == 3
    model = model_from_checkpoint(ckpt)
    assert model.frame_size == (32, 32)
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_config"] == ckpt["config"]["model_config"]
    assert not list(run.glob(".*tmp*"))


def test_run_folder_is_never_overwritten_silently(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=1, **FAST), progress=False)
    with pytest.raises(DiscodanceError, match="already exists"):
        train(tiny_data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=1, **FAST), progress=False)
    with pytest.raises(DiscodanceError, match="cannot resume"):
        train(tiny_data, tmp_path / "none", resume=True, progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DiscodanceError, match="not a readable discodance checkpoint"):
        load_checkpoint(tmp_path)


def test_batches_cover_each_epoch_once_and_split_across_ranks():
    n, b = 50, 10
    epoch = np.concatenate([global_batch_indices(s, b, n, seed=1) for s in range(5)])
    assert sorted(epoch) == list(range(n))
    full = global_batch_indices(7, b, n, seed=1)
    halves = [full[rank_slice(b, r, 2)] for r in range(2)]
    assert np.array_equal(np.concatenate(halves), full)
    with pytest.raises(DiscodanceError):
        rank_slice(9, 0, 2)


# ----------------------------------------------------------------------------- distributed
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, batch, out):
    import torch.distributed as dist
    from discodance.models import blocks, build_model, model_config
    # noise-free relaxation, so both runs see identical samples; DDP's averaging is under test
    blocks.gumbel_noise = lambda shape, generator, device=None: torch.zeros(shape, device=device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model("gumbel-vae", model_config("gumbel-vae", (32, 32), TINY_MODEL))
    net = torch.nn.parallel.DistributedDataParallel(model)
    loss, _ = net(batch[rank_slice(len(batch), rank, world)], step=0, generator=None)
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
    dist.barrier()  # both ranks done before teardown: gloo aborts a rank whose peer tears down mid-exchange
    dist.destroy_process_group()


def test_two_process_gloo_gradients_equal_one_process_on_the_combined_batch(tmp_path, monkeypatch):
    from discodance.models import blocks, build_model, model_config
    batch = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.6).float()  # window = context 2 + 1
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), batch, tmp_path / "g.pt"), nprocs=2)
    ddp = torch.load(tmp_path / "g.pt", weights_only=True)
    monkeypatch.setattr(blocks, "gumbel_noise", lambda shape, generator, device=None: torch.zeros(shape))
    torch.manual_seed(0)
    model = build_model("gumbel-vae", model_config("gumbel-vae", (32, 32), TINY_MODEL))
    loss, _ = model(batch, step=0, generator=None)
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ddp[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_torchrun_two_processes_train_and_rank0_writes(tiny_data, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "discodance.cli", "train", "--data", str(tiny_data), "--out", str(run), "--steps", "4",
           "--batch-size", "8", "--no-progress", "--device", "cpu"]
    cmd += [f"--set={k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in TINY_MODEL.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and ckpt["config"]["world_size"] == 2
    steps = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4  # one writer: no interleaved duplicate lines


def test_overwrite_never_deletes_the_dataset_inside_the_run_folder(tmp_path):
    from discodance.data.synthetic import write_synthetic
    run = tmp_path / "run"
    data = write_synthetic(run / "data", 120, 32, 32, seed=0)
    train(data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=1, **FAST), progress=False)  # the demo's layout
    with pytest.raises(DiscodanceError, match="holds the input"):
        train(data, run, "gumbel-vae", TINY_MODEL, TrainConfig(steps=1, **FAST), overwrite=True, progress=False)
    assert (data / "frames.npy").exists() and (run / "checkpoint.pt").exists()


def test_peak_memory_of_a_child_is_its_own_not_its_parents():
    """A training run started by a big process (compare) must not report the parent's memory:
    on Linux getrusage's ru_maxrss survives fork and execve, so peak_rss_mb must not use it."""
    from discodance.train import peak_rss_mb
    ballast = np.ones(600 * 2 ** 20, np.uint8)  # 600 MB touched in this process
    code = "from discodance.train import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert peak_rss_mb() > 600
    assert 0 < child < 400, child  # a Python + torch import is ~150-300 MB; the parent's 600 MB is not in it
    del ballast


def test_plateau_compares_the_best_of_the_last_validations_with_the_best_before_them():
    from discodance.train import Plateau
    p = Plateau()
    for quality in (0.80, 0.84, 0.845, 0.850, None, 0.851):
        p.update(quality)
    assert p.history == [0.80, 0.84, 0.845, 0.850, 0.851]
    # last 2 (0.850, 0.851) against 0.845 before them: +0.7 % < 1 %; last 3 against 0.84: +1.3 %
    assert p.reached(2, 0.01) and not p.reached(3, 0.01) and not p.reached(0, 0.01)
    assert not p.reached(2, 0.005) and not Plateau([0.5]).reached(1, 0.01)


def test_a_run_with_patience_stops_where_validation_stops_improving(tiny_data, tmp_path):
    # nothing can improve by 1000 %: the first validation sets the best, the next two are stale
    cfg = TrainConfig(steps=40, patience=2, min_improvement=10.0, **FAST)
    train(tiny_data, tmp_path / "run", "gumbel-vae", TINY_MODEL, cfg, progress=False)
    assert load_checkpoint(tmp_path / "run")["step"] == 3 * FAST["eval_every"]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in lines if "val_iou" in r]
    assert len(vals) == 3 and vals[-1].get("converged") and not any(r.get("converged") for r in vals[:-1])
    assert all(r["cpu_seconds"] > 0 for r in lines) and lines[-1]["cpu_seconds"] >= lines[0]["cpu_seconds"]
    cfg = TrainConfig(steps=12, patience=0, min_improvement=10.0, **FAST)   # patience 0: never stops early
    train(tiny_data, tmp_path / "full", "gumbel-vae", TINY_MODEL, cfg, progress=False)
    assert load_checkpoint(tmp_path / "full")["step"] == 12


def test_a_gan_ignores_the_plateau_rule(tiny_data, tmp_path):
    """Its next-frame IoU plateaus long before its adversarial term is done (GAN.plateau_stops)."""
    gan = {"two_stage": False, "unroll": 1, "mode_seeking": 0.0, "noise": 4, "code": 16, "d_channels": (8, 16),
           "channels": (8, 16), "hidden": 32}
    cfg = TrainConfig(steps=12, patience=1, min_improvement=10.0, **FAST)
    train(tiny_data, tmp_path / "gan", "gan", gan, cfg, progress=False)
    assert load_checkpoint(tmp_path / "gan")["step"] == 12
    lines = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("converged") for r in lines)


@pytest.mark.parametrize("fused", [True, False])
def test_clip_and_step_is_clip_grad_norm_then_the_step(fused):
    """The fused AdamW rescales inside its kernel (grad_scale); either way the update is the one
    of clip_grad_norm_ followed by a plain AdamW step, and the returned norm is the unclipped one."""
    import copy
    from discodance.train import clip_and_step
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(12, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3))
    theirs = copy.deepcopy(ours)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-2, fused=fused or None)
    ref = torch.optim.AdamW(theirs.parameters(), lr=1e-2)
    for step in range(12):
        x = torch.randn(16, 12) * (30.0 if step % 3 else 0.01)          # clipped and unclipped steps
        for m in (ours, theirs):
            m.zero_grad()
            m(x).pow(2).sum().backward()
        norm = clip_and_step(opt, list(ours.parameters()), 1.0)
        want = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
        ref.step()
        assert float(norm) == pytest.approx(float(want), rel=1e-5)
        assert getattr(opt, "grad_scale", None) is None                   # nothing left for a later step
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
