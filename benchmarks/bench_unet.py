"""Benchmark minisd's UNet2DConditionModel against diffusers' on the same weights (chapter 04).

Both models get the full SD v1.5 config and share one set of random weights; repetitions are
interleaved (minisd, diffusers, diffusers, minisd, ...) so drifting machine load hits both alike.
Batch 2 is one classifier-free-guidance step (unconditional + conditional).

    python benchmarks/bench_unet.py                              # CPU, fp32 and bf16, 32x32 and 64x64
    python benchmarks/bench_unet.py --device cuda --dtype fp16 --compile --reps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps (default: cpu)")
    p.add_argument("--dtype", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (default: fp32,bf16)")
    p.add_argument("--sizes", default="32,64", help="comma list of latent sizes (default: 32,64)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: 2, one CFG step)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per model (default: 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per model first (default: 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)")
    return p.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn, device: torch.device, *inputs: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds for one call `fn(*inputs)`, waiting for the device to finish, and its output."""
    synchronize(device)
    start = time.perf_counter()
    out = fn(*inputs)
    synchronize(device)
    return time.perf_counter() - start, out


def build_models(device: torch.device, dtype: torch.dtype, compile_models: bool):
    """diffusers' UNet with random v1.5 weights, and minisd's UNet holding the very same tensors."""
    from diffusers import UNet2DConditionModel as RefUNet

    from minisd.loading import sd15_config
    from minisd.models.unet import UNet2DConditionModel

    SD15_CONFIG = sd15_config("unet")

    ref = RefUNet.from_config(SD15_CONFIG).to(device=device, dtype=dtype).eval()
    with torch.device("meta"):
        ours = UNet2DConditionModel.from_config(SD15_CONFIG)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    if compile_models:
        ours, ref = torch.compile(ours), torch.compile(ref)
    return (lambda *inputs: ours(*inputs).sample), (lambda *inputs: ref(*inputs).sample)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = [d.strip() for d in args.dtype.split(",")]
    if unknown := [d for d in dtypes if d not in DTYPES]:
        raise SystemExit(f"unknown dtype {unknown}; choose from {sorted(DTYPES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch}"
    )
    print(f"reps {args.reps} (median), warmup {args.warmup}, compile {args.compile}\n")
    header = f"{'dtype':>5} {'latent':>7} {'minisd s':>9} {'diffusers s':>11} {'ratio':>6} {'rel diff':>9}"
    print(header, flush=True)
    for name in dtypes:
        dtype = DTYPES[name]
        torch.manual_seed(0)
        ours, ref = build_models(device, dtype, args.compile)
        for size in sizes:
            gen = torch.Generator().manual_seed(size)
            sample = torch.randn(args.batch, 4, size, size, generator=gen).to(device, dtype)
            text = torch.randn(args.batch, 77, 768, generator=gen).to(device, dtype)
            t = torch.full((args.batch,), 500, device=device)
            with torch.inference_mode():
                for _ in range(args.warmup):
                    ours(sample, t, text), ref(sample, t, text)
                times, outputs = {"ours": [], "ref": []}, {}
                for rep in range(args.reps):  # alternate which model goes first
                    order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
                    for who in order:
                        seconds, outputs[who] = timed(ours if who == "ours" else ref, device, sample, t, text)
                        times[who].append(seconds)
                a, b = outputs["ours"].float(), outputs["ref"].float()
                diff = ((a - b).abs().max() / b.abs().max()).item()
            mine, theirs = statistics.median(times["ours"]), statistics.median(times["ref"])
            ratio = mine / theirs
            print(
                f"{name:>5} {size:>3}x{size:<3} {mine:>9.3f} {theirs:>11.3f} {ratio:>6.3f} {diff:>9.1e}",
                flush=True,
            )
        del ours, ref
    print("\nratio = minisd / diffusers (median seconds per forward); rel diff = max|a-b| / max|b|")


if __name__ == "__main__":
    main()
