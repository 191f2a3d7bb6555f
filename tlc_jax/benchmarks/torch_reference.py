"""The PyTorch side of `tlc_jax.benchmarks.memory_speed`: torchvision's DenseNet class.

Everything here imports torch lazily; `torch_status()` says whether it can run at all,
so the JAX rows of the benchmark run where torch is missing.

What is counted, so it can be set against JAX's `saved_residuals`:

- **saved bytes** (`saved_for_backward`): every tensor autograd packs for the backward
  pass during one train-mode forward pass (`torch.autograd.graph.saved_tensors_hooks`),
  deduplicated by storage (`untyped_storage().data_ptr()`, counted with the storage's
  nbytes, the largest seen), excluding the parameters and the input batch. With
  `memory_efficient=True` torchvision wraps concat -> BN -> ReLU -> 1x1 conv in
  `torch.utils.checkpoint(use_reentrant=False)`: inside it, checkpoint's own hooks
  replace ours (nothing is stored), and checkpoint saves its inputs through our hook
  (checked with torch 2.14), so they are counted. BatchNorm's running statistics are
  buffers, not saved tensors. JAX counts the same thing from the traced program (all
  arrays the vjp keeps, minus the function's arguments, i.e. parameters, batch
  statistics, images and labels).
- **GPU peak** (`cuda_peak_bytes`): `torch.cuda.max_memory_allocated` over one full
  training step (forward, backward, SGD update), which includes parameters, gradients
  and optimizer state, in a fresh process.
"""

from __future__ import annotations

import importlib
import time
from typing import Any


def torch_status() -> tuple[bool, str]:
    """(usable, reason): torch and torchvision import, or why not."""
    try:
        importlib.import_module("torch")
        importlib.import_module("torchvision")
    except Exception as e:  # ImportError, or a broken install.
        return False, f"PyTorch rows skipped: torch/torchvision not importable ({e!r})"
    return True, ""


def versions() -> str:
    import torch
    import torchvision
    return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


def cifar_densenet(depth: int, growth_rate: int = 12, num_classes: int = 10,
                   memory_efficient: bool = False, in_channels: int = 3):
    """torchvision's `DenseNet` class with the CIFAR DenseNet-BC topology: three blocks
    of (depth - 4) / 6 bottleneck layers and a 3x3 stem conv with 2k channels (norm0,
    relu0 and pool0 removed), as tests/core/test_models.py builds it."""
    import torch
    import torchvision
    if not isinstance(depth, int) or depth < 10 or depth % 6 != 4:
        raise ValueError(f"DenseNet-BC depth must be an integer >= 10 with depth % 6 == 4;"
                         f" got {depth!r}.")
    n = (depth - 4) // 6
    net = torchvision.models.DenseNet(
        growth_rate=growth_rate, block_config=(n, n, n),
        num_init_features=2 * growth_rate, bn_size=4, num_classes=num_classes,
        memory_efficient=memory_efficient)
    net.features.conv0 = torch.nn.Conv2d(in_channels, 2 * growth_rate, 3, padding=1,
                                         bias=False)
    for stem_layer in ("norm0", "relu0", "pool0"):
        delattr(net.features, stem_layer)
    return net


def imagenet_densenet(name: str, num_classes: int = 1000, memory_efficient: bool = False):
    import torchvision
    return getattr(torchvision.models, name)(weights=None, num_classes=num_classes,
                                             memory_efficient=memory_efficient)


def build(model: str, depth: int | None, memory_efficient: bool, num_classes: int):
    if model == "densenet_bc":
        return cifar_densenet(depth, 12, num_classes, memory_efficient)
    return imagenet_densenet(model, num_classes, memory_efficient)


def saved_for_backward(net, batch_size: int, image_size: int, *,
                       num_classes: int, device: str = "cpu") -> dict[str, Any]:
    """Bytes autograd keeps for backward over one train-mode forward pass (see module
    docstring); runs the forward pass on `device` (real memory: about the returned
    bytes)."""
    import torch
    net = net.to(device).train()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)
    excluded = {p.untyped_storage().data_ptr() for p in net.parameters()}
    excluded.add(x.untyped_storage().data_ptr())
    storages: dict[int, int] = {}
    tensors = [0]

    def pack(t):
        tensors[0] += 1
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in excluded:
            storages[ptr] = max(storages.get(ptr, 0), s.nbytes())
        return t

    def unpack(t):
        return t

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss = torch.nn.functional.cross_entropy(net(x), y)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del loss, x
    net.to("cpu")
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"saved_bytes": sum(storages.values()), "saved_storages": len(storages),
            "packed_tensors": tensors[0], "param_bytes": param_bytes(net),
            "forward_s": seconds}


def param_bytes(net) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters())


def cuda_peak_bytes(net, batch_size: int, image_size: int, num_classes: int) -> int:
    """Peak bytes allocated over one SGD training step on the GPU (fresh process)."""
    import torch
    net = net.cuda().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch_size, 3, image_size, image_size, device="cuda")
    y = torch.randint(0, num_classes, (batch_size,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def train_step_call(net, batch_size: int, image_size: int, num_classes: int, *,
                    device: str = "cpu", amp_bf16: bool = False,
                    channels_last: bool = False, in_channels: int = 3):
    """One training step (forward, cross-entropy, backward, SGD with momentum) of `net`
    on a fixed random batch, as a function of no arguments that returns once the step
    is done (synchronised on CUDA)."""
    import torch
    net = net.to(device).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp_bf16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def step_time(net, batch_size: int, image_size: int, num_classes: int, *, steps: int,
              warmup: int = 1, device: str = "cpu", amp_bf16: bool = False,
              channels_last: bool = False, in_channels: int = 3) -> float:
    """Median seconds per training step (`train_step_call`) after `warmup` steps."""
    step = train_step_call(net, batch_size, image_size, num_classes, device=device,
                           amp_bf16=amp_bf16, channels_last=channels_last,
                           in_channels=in_channels)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]
