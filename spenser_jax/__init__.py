"""spenser_jax: grammar-based neuroevolution of convolutional spiking networks in JAX.

The handful of names a researcher needs, from a grammar to a trained network
(docs/api.md, "Python API", shows them together)::

    import numpy as np, jax, spenser_jax as sj

    space = sj.SearchSpace(sj.load_grammar("grammars/csnn.grammar"))
    rng = np.random.default_rng(0)
    parent = sj.sample(rng, space)                  # a valid random genotype
    child, events = sj.mutate(rng, parent, space)   # one offspring, and what changed
    phenotype = space.phenotype(child)              # typed layers; .text is the paper's form
    params, info = sj.train(phenotype, images, labels, time_steps=10, key=jax.random.key(0))
    accuracy = sj.score(phenotype, params, test_images, test_labels, time_steps=10,
                        key=jax.random.key(1))
    run = sj.load_run("runs/paper/mnist/seed0")     # a finished or running search

Subpackages hold the rest, one per layer in the order data flows (docs/layout.md):
``data`` and ``grammar`` -> ``genome`` (genotype, search space, mutation, phenotype) ->
``snn`` (the network) -> ``training`` (one core: step, epoch, score) -> ``scheduler``
(a generation) -> ``search`` (the strategies) -> ``run`` (config, files, checkpoint),
then the commands ``evolve``, ``retrain``, ``inspect``, ``export`` and ``report``.

Importing the package is cheap: JAX loads with the first name that needs it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_LAZY = {
    "parse_grammar": ("spenser_jax.grammar", "parse_grammar"),
    "SearchSpace": ("spenser_jax.genome.space", "SearchSpace"),
    "Genotype": ("spenser_jax.genome.genotype", "Genotype"),
    "MutationConfig": ("spenser_jax.genome.mutation", "MutationConfig"),
    "Phenotype": ("spenser_jax.genome.phenotype", "Phenotype"),
    "parse_phenotype": ("spenser_jax.genome.phenotype", "parse"),
    "SpikingNetwork": ("spenser_jax.snn.network", "SpikingNetwork"),
    "load_run": ("spenser_jax.run.runs", "load_run"),
}

__all__ = sorted([*_LAZY, "load_grammar", "sample", "mutate", "init_network", "train", "score"])

if TYPE_CHECKING:  # pragma: no cover - for readers and type checkers
    from spenser_jax.genome.genotype import Genotype
    from spenser_jax.genome.mutation import MutationConfig
    from spenser_jax.genome.phenotype import Phenotype
    from spenser_jax.genome.phenotype import parse as parse_phenotype
    from spenser_jax.genome.space import SearchSpace
    from spenser_jax.grammar import parse_grammar
    from spenser_jax.run.runs import load_run
    from spenser_jax.snn.network import SpikingNetwork


# Modules that moved in 0.3 (issue 27, a layout that shows the layers): the old
# name imports the new module, with a DeprecationWarning, for one release.
MOVED: dict[str, str] = {
    # genome and snn
    "spenser_jax.genotype": "spenser_jax.genome.space",  # imports the genotype types too
    "spenser_jax.phenotype": "spenser_jax.genome.phenotype",
    "spenser_jax.mutation": "spenser_jax.genome.mutation",
    "spenser_jax.draws": "spenser_jax.genome.draws",
    "spenser_jax.network": "spenser_jax.snn.network",
    "spenser_jax.conv": "spenser_jax.snn.conv",
    "spenser_jax.architecture": "spenser_jax.snn.architecture",
    "spenser_jax.activity": "spenser_jax.snn.activity",
    "spenser_jax.activity_sums": "spenser_jax.snn.activity_sums",
    # training
    "spenser_jax.protocol": "spenser_jax.training.protocol",
    "spenser_jax.optim": "spenser_jax.training.optim",
    "spenser_jax.inheritance": "spenser_jax.training.inheritance",
    "spenser_jax.fitness": "spenser_jax.training.evaluation",
    "spenser_jax.layer_programs": "spenser_jax.training.blocks",
    # search and run
    "spenser_jax.evolution": "spenser_jax.search.one_plus_lambda",
    "spenser_jax.population": "spenser_jax.search.nsga2",
    "spenser_jax.checkpoint": "spenser_jax.run",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old name; consulted only after the real files (sys.meta_path's end)."""

    def __init__(self):
        self.real_specs: dict = {}  # old name -> the new module's own spec, between create and exec

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        import warnings

        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name]}; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(MOVED[spec.name])
        self.real_specs[spec.name] = module.__spec__  # the import system sets the old name's; exec_module undoes it
        return module

    def exec_module(self, module):
        module.__spec__ = self.real_specs.pop(module.__spec__.name)  # nothing else to run: imported whole


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name == "evaluate":  # its name until 0.2: "evaluate" now means train and score (evaluation.evaluate_one)
        import warnings

        warnings.warn("spenser_jax.evaluate is now spenser_jax.score", DeprecationWarning, stacklevel=2)
        return score
    raise AttributeError(f"module 'spenser_jax' has no attribute {name!r}")


def load_grammar(path):
    """Parse a grammar file; ``grammars/csnn.grammar`` finds the packaged Grammar 2 anywhere."""
    from spenser_jax import grammar

    return grammar.load_grammar(grammar.locate(path))


def sample(rng, space, config=None):
    """A valid random individual, drawn as generation 0 is."""
    from spenser_jax.genome import mutation

    return mutation.sample(rng, space, config or mutation.MutationConfig())


def mutate(rng, parent, space, config=None):
    """A valid offspring of ``parent`` and the mutation events applied, as the search makes it."""
    from spenser_jax.genome import mutation

    return mutation.offspring(rng, parent, space, config or mutation.MutationConfig())


def init_network(key, phenotype, input_shape):
    """The Flax module of a phenotype, its initial parameters and float genes.

    Returns ``(model, params, hyper)``: ``model.apply({"params": params},
    spikes, hyper)`` maps input spikes ``[T, B, H, W, C]`` to output spikes
    ``[T, B, classes]``; weights start as PyTorch's default initialisation.
    """
    from spenser_jax.snn import architecture, network

    sig, hyper = architecture.split(phenotype)
    return network.SpikingNetwork(sig), network.init_params(key, sig, hyper, input_shape), hyper


def train(phenotype, images, labels, *, time_steps, key, epochs=1, batch_size=64, params=None):
    """Train a phenotype's network with its own learning unit, as the search does.

    ``images`` are ``uint8 [N, H, W, C]`` (rate-coded on the device). Returns
    ``(params, info)``; ``info`` has ``losses`` (one per epoch), ``steps``,
    ``nonfinite``, ``compile_seconds`` and ``train_seconds``.
    """
    import jax

    from spenser_jax.data import Arrays
    from spenser_jax.training import evaluation
    from spenser_jax.training.protocol import Protocol

    protocol = Protocol(time_steps=time_steps, epochs=epochs, batch_size=batch_size)
    trainer = evaluation.Trainer(protocol, tuple(images.shape[1:]))
    state, info = trainer.train(phenotype, key, evaluation.on_device(Arrays(images, labels)), params=params)
    return jax.device_get(state.params), info


def score(phenotype, params, images, labels, *, time_steps, key, batch_size=1000):
    """Spike-count accuracy of trained ``params`` on ``images``/``labels`` (rate-coded with ``key``)."""
    from spenser_jax.data import Arrays
    from spenser_jax.training import evaluation
    from spenser_jax.training.protocol import Protocol

    protocol = Protocol(time_steps=time_steps, eval_batch_size=batch_size)
    trainer = evaluation.Trainer(protocol, tuple(images.shape[1:]))
    accuracy, _, _ = trainer.score(phenotype, params, evaluation.on_device(Arrays(images, labels)), key)
    return accuracy
