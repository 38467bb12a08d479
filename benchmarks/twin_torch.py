"""The original SPENSER evaluator's twin in torch + snntorch (dev-only packages; see original_engine.py).

One candidate as the original evaluates it: the phenotype's layers as a
``torch.nn.Module`` (:mod:`twin_layers` specs, PyTorch's default
initialisation, ``snn.Leaky`` with the genes' β, θ, surrogate and reset, and
``learn_beta``/``learn_threshold``), ``torch.optim`` built from the learning
unit (``decay`` as ``weight_decay``; RMSProp's ρ passed as ``alpha``
unclamped, as the original does), one epoch of shuffled batches of 64 with
``spikegen.rate`` per batch and snntorch's ``mse_count_loss(1.0, 0.0)``, then
the accuracy of the spike-count argmax on the Fitness split, under
``torch.no_grad`` in eval mode (dropout off, as in ours). torch's thread count
is left as torch sets it (the original never sets it).
"""

from __future__ import annotations

import math
import time

import numpy as np
import snntorch as snn
import snntorch.functional as SF
import torch
from snntorch import spikegen, surrogate
from twin_layers import ConvSpec, DropoutSpec, LIFSpec, LinearSpec, PoolSpec, layer_specs, torch_weights

from spenser_jax.genome.phenotype import SGD, Adam, Phenotype, RMSProp

SURROGATES = {"atan": surrogate.atan, "fast-sigmoid": surrogate.fast_sigmoid}  # snntorch's defaults: α 2, slope 25
F = torch.nn.functional


class TwinNet(torch.nn.Module):
    """The phenotype's network: input spikes ``[T, B, C, H, W]`` -> output spikes ``[T, B, 10]``."""

    def __init__(self, specs):
        super().__init__()
        self.specs = specs
        self.cells = torch.nn.ModuleDict()
        for spec in specs:
            if isinstance(spec, ConvSpec):
                self.cells[spec.name] = torch.nn.Conv2d(
                    spec.in_channels, spec.out_channels, spec.kernel, stride=spec.stride, bias=spec.bias
                )
            elif isinstance(spec, LinearSpec):
                self.cells[spec.name] = torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
            elif isinstance(spec, LIFSpec):
                self.cells[spec.name] = snn.Leaky(
                    beta=spec.beta,
                    threshold=spec.threshold,
                    spike_grad=SURROGATES[spec.surrogate](),
                    reset_mechanism=spec.reset,
                    learn_beta=spec.learn_beta,
                    learn_threshold=spec.learn_threshold,
                )
        self.drops = [torch.nn.Dropout(s.rate) if isinstance(s, DropoutSpec) else None for s in specs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mems = {s.name: self.cells[s.name].reset_mem() for s in self.specs if isinstance(s, LIFSpec)}
        out = []
        for t in range(x.shape[0]):
            h = x[t]
            for spec, drop in zip(self.specs, self.drops, strict=True):
                if isinstance(spec, ConvSpec):
                    h = self.cells[spec.name](F.pad(h, spec.pad) if any(spec.pad) else h)
                elif isinstance(spec, PoolSpec):
                    h = (F.max_pool2d if spec.kind == "max" else F.avg_pool2d)(h, spec.kernel)
                elif isinstance(spec, DropoutSpec):
                    h = drop.train(self.training)(h)  # a fresh mask at every step, as ours
                elif isinstance(spec, LinearSpec):
                    h = self.cells[spec.name](h.flatten(1))
                else:
                    h, mems[spec.name] = self.cells[spec.name](h, mems[spec.name])
            out.append(h)
        return torch.stack(out)

    def load_ours(self, params) -> None:
        """Copy our parameters (JAX layouts) into this network (:func:`twin_layers.torch_weights`)."""
        weights = torch_weights(self.specs, params)
        with torch.no_grad():
            for name, value in weights.items():
                cell, attr = name.split(".")
                getattr(self.cells[cell], attr).copy_(torch.from_numpy(np.array(value)))


def optimizer(unit, params) -> torch.optim.Optimizer:
    """``torch.optim`` for a learning unit, as the original builds it."""
    if isinstance(unit, SGD):
        return torch.optim.SGD(
            params, lr=unit.lr, momentum=unit.momentum, weight_decay=unit.decay, nesterov=unit.nesterov
        )
    if isinstance(unit, Adam):
        return torch.optim.Adam(
            params, lr=unit.lr, betas=(unit.beta1, unit.beta2), weight_decay=unit.decay, amsgrad=unit.amsgrad
        )
    if isinstance(unit, RMSProp):
        return torch.optim.RMSprop(params, lr=unit.lr, alpha=unit.rho, weight_decay=unit.decay)
    raise TypeError(f"not a learning unit: {unit!r}")


def to_tensors(images: np.ndarray, labels: np.ndarray, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC images -> float NCHW in [0, 1] (torchvision's ToTensor), int64 labels, on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)
    return x.to(device), torch.from_numpy(labels.astype(np.int64)).to(device)


def evaluate(
    phenotype: Phenotype,
    train: tuple[torch.Tensor, torch.Tensor],
    fitness: tuple[torch.Tensor, torch.Tensor],
    *,
    time_steps: int,
    seed: int,
    batch_size: int = 64,
    eval_batch_size: int = 1000,
    device: str = "cpu",
) -> dict:
    """Build, train one epoch and score one candidate; ``{"fitness", "status", "seconds", "train_seconds"}``.

    ``train`` and ``fitness`` are already on ``device`` (as ours, the data is put there once per run). A failure
    (any exception) scores -1, as the original's out-of-memory case does.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    try:
        net = TwinNet(layer_specs(phenotype, tuple(train[0].shape[2:]) + (train[0].shape[1],))).to(device)
        opt = optimizer(phenotype.learning, net.parameters())
        loss_fn = SF.mse_count_loss(correct_rate=1.0, incorrect_rate=0.0)
        images, labels = train
        net.train()
        for batch in torch.randperm(len(labels), device=device).split(
            batch_size
        ):  # DataLoader(shuffle=True, batch_size=64)
            out = net(spikegen.rate(images[batch], num_steps=time_steps))
            loss = loss_fn(out, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        trained = time.perf_counter()
        fit = score(net, *fitness, time_steps, eval_batch_size)
        status = "ok"
    except Exception as err:  # noqa: BLE001 (the original scores any failure -1, or hangs)
        fit, status, trained = -1.0, f"failed: {type(err).__name__}: {str(err)[:200]}", time.perf_counter()
    end = time.perf_counter()
    return {"fitness": fit, "status": status, "seconds": end - start, "train_seconds": trained - start}


@torch.no_grad()
def score(net: TwinNet, images: torch.Tensor, labels: torch.Tensor, time_steps: int, batch_size: int) -> float:
    """Accuracy of the spike-count argmax (first index on ties) on freshly encoded spikes."""
    net.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        counts = net(spikegen.rate(images[start : start + batch_size], num_steps=time_steps)).sum(0)
        correct += int((counts.argmax(1) == labels[start : start + batch_size]).sum())
    acc = correct / len(labels)
    return acc if math.isfinite(acc) else -1.0
