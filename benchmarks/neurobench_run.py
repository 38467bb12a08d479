"""NeuroBench's own metrics of one exported graph, inside a venv with neurobench (dev-only, GPL).

``python neurobench_run.py GRAPH.nir INPUT.npz OUT.json``: imports the graph
(written by ``export --for snntorch``) with snntorch's ``import_from_nir``,
wraps it in NeuroBench's ``SNNTorchModel`` and runs NeuroBench's
``Benchmark`` on ``INPUT.npz``'s ``x`` (spikes ``[T, B, C, H, W]``) with
every static and workload metric that benchmarks/neurobench_check.py compares
with ours; writes NeuroBench's results, its version and the model's output
spikes to OUT.json. One sample a batch: nirtorch maps ``Flatten(start_dim=0)``
to ``torch.nn.Flatten(0, -1)``, which would flatten a batch axis too.
Imports nothing of spenser_jax (neurobench's licence keeps it out of the package).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    import nir
    import torch
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import (
        ActivationSparsity,
        ActivationSparsityByLayer,
        MembraneUpdates,
        NeuronOperations,
        SynapticOperations,
    )
    from neurobench.models import SNNTorchModel
    from snntorch.import_nir import import_from_nir

    path, inputs, out = argv
    x = np.load(inputs)["x"].astype(np.float32)  # [T, B, C, H, W]
    data = torch.from_numpy(x.transpose(1, 0, 2, 3, 4).copy())  # NeuroBench: [B, T, ...]
    labels = torch.zeros(data.shape[0], dtype=torch.long)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, labels), batch_size=1)
    model = SNNTorchModel(import_from_nir(nir.read(path)))
    outputs = []

    def keep(spikes):  # postprocessor: the output spikes, then NeuroBench's predictions
        o = spikes.detach().numpy().copy()  # [1, T, K]; [K, T] when the batch axis was flattened away
        outputs.append(o.T[None] if o.ndim == 2 else o)
        return torch.zeros(1, dtype=torch.long)

    static = [Footprint, ParameterCount, ConnectionSparsity]
    workload = [ActivationSparsity, ActivationSparsityByLayer, SynapticOperations, MembraneUpdates, NeuronOperations]
    results = Benchmark(model, loader, [], [keep], [static, workload]).run(quiet=True)
    payload = {
        "neurobench": importlib.metadata.version("neurobench"),
        "snntorch": importlib.metadata.version("snntorch"),
        "torch": importlib.metadata.version("torch"),
        "results": json.loads(json.dumps(results, default=float)),
        "output": np.concatenate(outputs).transpose(1, 0, 2).tolist(),  # [T, B, K]
        "layers": [name for name, mod in model.net.named_modules() if type(mod).__name__ == "Leaky"],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
