"""PyTorch eager inference of the reference models on the GPU, timed the way
examples/gpu_bench.rs times ours.

Usage: python3 crates/cuda/scripts/torch_gpu.py [--model dit-tiny|unet-small] [--batch N]
Same architecture (benches/pytorch/models.py), float32 with TF32 off (ours is plain f32
cuBLAS), eval mode, no autograd; each sample is 10 back-to-back calls between
synchronizations, median of 9 samples after 3 warm-up calls. Random weights everywhere
(adaLN-Zero's zero layers re-drawn) and random inputs.
"""
import argparse, os, statistics, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benches", "pytorch"))
from models import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dit-tiny")
    ap.add_argument("--batch", type=int, default=None, help="default: the CPU benchmark's batch")
    ap.add_argument("--train", action="store_true", help="time a training step (MSE, backward, AdamW)")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    # models.py makes its timestep frequencies with a bare torch.arange: on the GPU too.
    torch.set_default_device("cuda")
    model, shape, batch = build(args.model)
    batch = args.batch or batch
    model = model.eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 1.0 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    x = torch.randn(batch, *shape, device="cuda")
    t = torch.randint(0, 1000, (batch,), device="cuda")
    if args.train:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        target = torch.randn_like(x)

        def call():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(x, t), target).backward()
            opt.step()
    else:

        def call():
            with torch.no_grad():
                model(x, t)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(9):
        t0 = time.perf_counter()
        for _ in range(10):
            call()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) / 10)
    ms = statistics.median(samples) * 1e3
    what = "training step" if args.train else "inference"
    print(f"pytorch {torch.__version__} eager {args.model} {what} batch {batch}: {ms:.3f} ms "
          f"({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
