"""PyTorch CPU training throughput for airbench94 (CIFAR-10 shape) and LeNet-5 (MNIST shape).

The reference a user would otherwise pick: the same nets trained in plain PyTorch on random data
(fixed seed). After ``--warmup`` untimed steps, ``--steps`` training steps (fetch a batch from a
pre-made list of CPU tensors, forward, loss, backward, optimizer step) are timed, and one JSON
line goes to stdout. It needs only torch (no kzoo, keras or tensorflow):

    /work/torch-venv/bin/python bench/torch_reference.py --model airbench --precision bfloat16
    /work/torch-venv/bin/python bench/torch_reference.py --model lenet5 --steps 200 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from torch import nn

# Channels-last layout for model and input: on a 2-thread Xeon with AMX, airbench at batch 64 ran
# ~1.1x faster in float32 and ~1.6x in bfloat16 than with contiguous NCHW; LeNet-5 was within
# noise either way, so both models use it. Batches are stored as plain NCHW and converted on
# every step, so the timed loop pays for the layout change as it would for a host-to-device copy.
MEMORY_FORMAT = torch.channels_last
N_BATCHES = 4  # distinct random batches, cycled through by the training loop
DEFAULT_BATCH_SIZE = {"airbench": 1024, "lenet5": 128}


def activation(name: str) -> nn.Module:
    return {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU()}[name]


def conv_group(width_in: int, width_out: int, act: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width_in, width_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(width_out),
        activation(act),
        nn.Conv2d(width_out, width_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(width_out),
        activation(act),
    )


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def airbench(act: str) -> nn.Sequential:
    """airbench94 (Jordan 2024): 2x2 whitening conv, three conv groups, linear head scaled 1/9."""
    return nn.Sequential(
        nn.Conv2d(3, 24, 2, padding=0, bias=True),
        activation(act),
        conv_group(24, 64, act),
        conv_group(64, 256, act),
        conv_group(256, 256, act),
        nn.MaxPool2d(3),
        nn.Flatten(),
        nn.Linear(256, 10, bias=False),
        Scale(1 / 9),
    )


def lenet5() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def setup(model: str, act: str) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, tuple[int, ...]]:
    """The net, its optimizer, its loss and the shape of one input image (C, H, W)."""
    if model == "airbench":
        net = airbench(act)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.85, nesterov=True)
        return net, optimizer, nn.CrossEntropyLoss(label_smoothing=0.2), (3, 32, 32)
    net = lenet5()
    return net, torch.optim.Adam(net.parameters(), lr=1e-3), nn.CrossEntropyLoss(), (1, 28, 28)


def time_training(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    precision: str,
    steps: int,
    warmup: int,
) -> float:
    """Seconds taken by ``steps`` training steps after ``warmup`` untimed ones."""
    net.train()

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        x, y = x.to("cpu", memory_format=MEMORY_FORMAT), y.to("cpu")
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bfloat16"
            else contextlib.nullcontext()
        )
        with autocast:
            loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("airbench", "lenet5"), required=True)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch-size", type=int, help="default: 1024 airbench, 128 lenet5")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--activation", choices=("gelu", "gelu_tanh", "relu"), default="gelu_tanh",
                        help="airbench only")
    args = parser.parse_args()
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE[args.model]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, optimizer, loss_fn, image_shape = setup(args.model, args.activation)
    net = net.to(memory_format=MEMORY_FORMAT)
    batches = [
        (torch.randn(batch_size, *image_shape), torch.randint(0, 10, (batch_size,)))
        for _ in range(N_BATCHES)
    ]

    seconds = time_training(net, optimizer, loss_fn, batches, args.precision, args.steps, args.warmup)
    print(json.dumps({
        "framework": "torch",
        "torch": torch.__version__,
        "model": args.model,
        "precision": args.precision,
        "batch_size": batch_size,
        "steps": args.steps,
        "images_per_s": batch_size * args.steps / seconds,
        "seconds_per_step": seconds / args.steps,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
