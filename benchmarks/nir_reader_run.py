"""Runs one NIR graph in one reader, inside that reader's own environment (dev-only).

``python nir_reader_run.py READER GRAPH.nir INPUT.npz OUT.npz``: imports the
graph with READER's own importer and runs it on ``INPUT.npz``'s ``x``
(spikes ``[T, B, C, H, W]``, channels first), writing ``output`` (``[T, B,
...]``) and ``version`` to OUT.npz, or ``error`` (the exception, as text)
where the import or the run fails. Imports nothing of spenser_jax: the
readers' environments (benchmarks/nir_readers.py makes the graphs) hold only
the reader, its pinned ``nir`` and torch or JAX.

Each reader is called as its documentation shows. The torch readers run one
sample at a time, from a fresh import (fresh membranes): nirtorch maps
``Flatten(start_dim=0)`` to ``torch.nn.Flatten(0, -1)``, which would flatten
a batch axis too.
"""

from __future__ import annotations

import importlib.metadata
import sys
import traceback

import numpy as np


def _torch_steps(make, x: np.ndarray) -> np.ndarray:
    """``make()`` a fresh module per sample, feed it ``x[t, b]`` step by step with its state."""
    import torch

    outputs = []
    for b in range(x.shape[1]):
        module = make()
        state, steps = None, []
        with torch.no_grad():
            for t in range(x.shape[0]):
                out, state = module(torch.from_numpy(x[t, b]), state)
                steps.append(np.asarray(out.detach().numpy(), np.float32).copy())
        outputs.append(np.stack(steps))
    return np.stack(outputs, axis=1)


def run(reader: str, path: str, x: np.ndarray) -> np.ndarray:
    import nir

    if reader == "nir":
        raise ValueError("nir is the format, not a reader: benchmarks/nir_readers.py simulates it")
    if reader == "snntorch":
        from snntorch.import_nir import import_from_nir

        return _torch_steps(lambda: import_from_nir(nir.read(path)), x)
    if reader == "norse":
        import norse.torch

        return _torch_steps(lambda: norse.torch.from_nir(nir.read(path)), x)
    if reader == "spyx":
        import jax.numpy as jnp
        import spyx.nir

        graph = nir.read(path)
        dt = float(graph.metadata.get("dt", 1.0))
        _, out = spyx.nir.from_nir(graph, jnp.asarray(x.transpose(0, 1, 3, 4, 2)), dt=dt)  # channels last
        return np.asarray(out, np.float32)
    if reader == "sinabs":
        import sinabs
        import torch

        graph = nir.read(path)
        module = sinabs.from_nir(graph, batch_size=x.shape[1])
        with torch.no_grad():  # sinabs: [B * T, ...] for the Squeeze layers, batch-major time
            flat = torch.from_numpy(x.transpose(1, 0, 2, 3, 4).reshape(-1, *x.shape[2:]).copy())
            out = module(flat)
            out = out[0] if isinstance(out, tuple) else out
        return np.asarray(out.numpy(), np.float32).reshape(x.shape[1], x.shape[0], -1).transpose(1, 0, 2)
    if reader == "rockpool":
        from rockpool.nn.modules import from_nir

        return _torch_steps(lambda: from_nir(nir.read(path)), x)
    raise ValueError(f"unknown reader {reader!r}")


def main(argv: list[str]) -> int:
    reader, path, inputs, out = argv
    x = np.load(inputs)["x"].astype(np.float32)
    result = {"version": importlib.metadata.version(reader), "nir_version": importlib.metadata.version("nir")}
    try:
        result["output"] = run(reader, path, x)
    except Exception as exc:  # noqa: BLE001 - the failure is the measurement
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-2000:]
    np.savez(out, **result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
