"""GPU benchmark (issue 9): step time with no logging, with `.item()` + a tracker call, and with fanlog.

Run on a CUDA machine:  python bench/bench_gpu.py
Smoke-run on CPU:       python bench/bench_gpu.py --device cpu --tiny

The model is sized so that one training step takes 5–20 ms on an H100. All three
variants run in one process, interleaved in rounds, so that they share the same
machine state; the table reports the median step time and the overhead over no logging.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch


def make_step(device: torch.device, width: int, depth: int, batch: int) -> tuple[Callable[[], Any], Any]:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = torch.randn(batch, width, device=device)
    targets = torch.randn(batch, 1, device=device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = torch.nn.functional.mse_loss(model(inputs).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step, model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, steps: int, body: Callable[[int], None]) -> float:
    """Mean step time in ms over `steps` steps, the device drained at both ends.

    Per-step host times would hide the cost: the host runs ahead of the GPU until
    something (like `.item()`) makes it wait, so only the drained total is honest.
    """
    synchronize(device)
    start = time.perf_counter()
    for i in range(steps):
        body(i)
    synchronize(device)
    return (time.perf_counter() - start) * 1000 / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--tiny", action="store_true", help="small sizes for a CPU smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.width, args.depth, args.batch, args.steps, args.rounds = 64, 2, 32, 30, 1
    device = torch.device(args.device)
    step, _ = make_step(device, args.width, args.depth, args.batch)
    for _ in range(10):
        step()  # warm-up: kernels, allocator, autotuning

    from torch.utils.tensorboard import SummaryWriter

    from fanlog import JournalLogger, LoggersCollection, MLflowLogger, TensorBoardLogger

    workdir = tempfile.mkdtemp(prefix="fanlog-gpu-bench-")
    writer = SummaryWriter(f"{workdir}/raw-tb")

    def no_logging(i: int) -> None:
        step()

    def item_pattern(i: int) -> None:
        loss = step()
        writer.add_scalar("train/loss", loss.item(), i)  # .item() waits for the GPU every step

    fan = LoggersCollection(
        [
            JournalLogger(savedir=workdir, log_freq="batch"),
            TensorBoardLogger(savedir=f"{workdir}/tb", log_freq="batch"),
            MLflowLogger(savedir=workdir, experiment_name="gpu-bench", log_freq="batch"),
        ]
    )
    fan.create_logger_context()

    def fanlog_pattern(i: int) -> None:
        loss = step()
        fan.log(loss, "train/loss", step=i, batch_idx=i)

    variants = {
        "no logging": no_logging,
        "`.item()` + SummaryWriter.add_scalar": item_pattern,
        "fanlog → journal + TensorBoard + MLflow": fanlog_pattern,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, body in variants.items():
            samples[name].append(timed(device, args.steps, body))
    fan.destroy_logger_context()
    writer.close()
    base = statistics.median(samples["no logging"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device: {name}; width {args.width}, depth {args.depth}, batch {args.batch}, "
        f"{args.rounds} rounds × {args.steps} steps per variant, interleaved"
    )
    print("| variant | step time, median of rounds (ms) | slowest round (ms) | overhead vs no logging |")
    print("|---|---|---|---|")
    for variant, times in samples.items():
        median = statistics.median(times)
        print(f"| {variant} | {median:.3f} | {max(times):.3f} | {100 * (median / base - 1):+.2f}% |")


if __name__ == "__main__":
    main()
