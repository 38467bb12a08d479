"""After the search: train the best individual further and test it.

``python -m spenser_jax.retrain RUN_DIR [--epochs 50] [--from-scratch] [--curve] [--minutes M] [--json [PATH]]``
``python -m spenser_jax.retrain RUN_DIR --front [--epochs 50] [--json [PATH]]``

As the paper: the run's best trains ``--epochs`` more epochs on the whole
train split (EvoTrain + Fitness, or the run's subset of it) and is tested
on the official test split (``test.json``; docs/running.md). It continues
from its search weights with a fresh optimizer state (the search keeps
none). ``--minutes`` stops after the last epoch that fits; those epochs are
the first of a longer retraining, so ``--epochs N`` repeats them exactly.
``--front`` (a population search): every member of the final first front
trains from scratch with the same key and is tested (``front_test.json``):
the front on data no search saw.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import jax

from spenser_jax.errors import (
    SpenserError,
    add_json_argument,
    command,
    count,
    positive_float,
    positive_int,
    write_json,
)
from spenser_jax.run import files, load_run, save_weights
from spenser_jax.training.evaluation import Trainer, on_device

_RETRAIN_STREAM = 0x2E7A
_TEST_STREAM = 0x7E57


class TrainingDiverged(SpenserError, ValueError):
    """Retraining reached a non-finite loss; nothing was written."""


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spenser_jax.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--epochs", type=positive_int, default=50, help="training epochs (paper: 50)")
    parser.add_argument("--from-scratch", action="store_true", help="start from fresh weights")
    parser.add_argument("--data-dir", default=None, help="override the run's dataset.data_dir")
    parser.add_argument("--seed", type=count, default=None, help="training seed (default: the run's)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default: the run's")
    parser.add_argument("--curve", action="store_true", help="test after every epoch (the learning curve)")
    parser.add_argument(
        "--minutes", type=positive_float, default=None, help="end after the last epoch that fits in this time"
    )
    parser.add_argument(
        "--front",
        action="store_true",
        help="a population search (nsga2): retrain every member of its first front from scratch, into front_test.json",
    )
    add_json_argument(parser, "the result (test.json's content)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.front:
        if args.curve or args.minutes is not None or args.from_scratch:
            parser.error(
                "--front retrains from scratch for --epochs; --curve, --minutes and --from-scratch are for one"
            )
        result = retrain_front(
            run_dir, epochs=args.epochs, data_dir=args.data_dir, seed=args.seed, batch_size=args.batch_size
        )
        if args.json:
            write_json(args.json, json.dumps(result, indent=1))
        if args.json != "-":
            for m in result["members"]:
                print(
                    f"generation {m['generation']} individual {m['index']}: test accuracy {m['accuracy']:.4f}, "
                    f"{m['synops_per_sample']:.3g} SynOps per sample"
                )
            print(f"-> {run_dir / files.FRONT_TEST}")
        return 0
    result = retrain(
        run_dir,
        epochs=args.epochs,
        from_scratch=args.from_scratch,
        data_dir=args.data_dir,
        seed=args.seed,
        batch_size=args.batch_size,
        curve=args.curve,
        minutes=args.minutes,
    )
    if args.json != "-":
        print(
            f"test accuracy {result['accuracy']:.4f} ({result['dataset']}, {result['epochs']} epochs"
            f"{', from scratch' if result['from_scratch'] else ''}) -> {run_dir / 'test.json'}"
        )
    if args.json:
        write_json(args.json, json.dumps(result, indent=1))
    return 0


def _check_budget(epochs: int, batch_size: int | None) -> None:
    # Before anything is loaded: 0 would otherwise pass for "not given" (batch size) or fail late.
    if epochs < 1 or batch_size is not None and batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")


def _retraining(run, data_dir, batch_size, epochs):
    """The run's splits on the device and a Trainer for retraining: the whole budget, at the data set's T."""
    identity = run.identity
    splits = run.splits(data_dir)
    # Retraining trains the whole budget, from the weights given: no early
    # check, nothing inherited, at the data set's T (a search may have run
    # at a lower one, search.time_steps).
    batch_size = identity["training"]["batch_size"] if batch_size is None else batch_size
    protocol = run.protocol(
        epochs=epochs,
        batch_size=batch_size,
        early_stop=None,
        inherit=False,
        min_steps=None,
        time_steps=identity["time_steps"],
    )
    trainer = Trainer(protocol, tuple(splits.train.images.shape[1:]))
    return trainer, on_device(splits.train), on_device(splits.test)


def retrain_front(
    run_dir: Path,
    *,
    epochs: int = 50,
    data_dir=None,
    seed: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Retrain every first-front member of a population search from scratch, test each, write ``front_test.json``.

    Each member trains with the same key (the run's seed, or ``seed``), so
    the front is compared on one yardstick; its test accuracy and activity
    (SynOps, energy per sample) are measured on the official test split.

    Raises:
      CheckpointError: not a run, not a population search, no completed generation, or the directory in use.
      TrainingDiverged: a member's training diverged (nothing is written).
    """
    _check_budget(epochs, batch_size)
    with _held(run_dir) as (run, lock):
        state = run.state
        if state is None or not getattr(state, "members", ()):
            raise files.CheckpointError(
                f"{run_dir}: --front needs a population search (evolution.strategy=nsga2) with a completed generation"
            )
        lock.announce()
        return _retrain_front(
            run, run_dir, state, epochs=epochs, data_dir=data_dir, seed=seed, batch_size=batch_size, progress=progress
        )


def _retrain_front(run, run_dir, state, *, epochs, data_dir, seed, batch_size, progress) -> dict:
    trainer, train, test = _retraining(run, data_dir, batch_size, epochs)
    root = jax.random.key(run.identity["seed"] if seed is None else seed)
    space = run.space()
    front = [m for m, r in zip(state.members, state.ranks) if r == 0 and m.values]
    members = []
    for k, m in enumerate(front):
        phenotype = space.phenotype(m.genotype)
        if progress:
            print(f"[{k + 1}/{len(front)}] generation {m.born[0]} individual {m.born[1]}", flush=True)
        trained, info = trainer.train(phenotype, jax.random.fold_in(root, _RETRAIN_STREAM), train)
        if info["nonfinite"]:
            raise TrainingDiverged(
                f"generation {m.born[0]} individual {m.born[1]}: training diverged after {info['steps']} steps; "
                "nothing written"
            )
        accuracy, _, summary = trainer.score(
            phenotype, trained.params, test, jax.random.fold_in(root, _TEST_STREAM), activity=True
        )
        members.append(
            {
                "generation": m.born[0],
                "index": m.born[1],
                "phenotype": phenotype.text,
                "search_fitness": m.fitness,
                "accuracy": accuracy,
                **{k: summary[k] for k in ("synops_per_sample", "energy_pj_per_sample", "spikes_per_sample")},
                "losses": info["losses"],
            }
        )
    result = {
        "dataset": run.identity["dataset"],
        "epochs": epochs,
        "objectives": run.identity["strategy"]["objectives"],
        "time_steps": run.identity["time_steps"],
        "test_samples": int(test.labels.shape[0]),
        "members": sorted(members, key=lambda m: m["synops_per_sample"]),
    }
    files.atomic_write(Path(run_dir) / files.FRONT_TEST, json.dumps(result, indent=1))
    return result


def retrain(
    run_dir: Path,
    *,
    epochs: int = 50,
    from_scratch: bool = False,
    data_dir=None,
    seed: int | None = None,
    batch_size: int | None = None,
    curve: bool = False,
    minutes: float | None = None,
    progress: bool = True,
) -> dict:
    """Train the run's best individual further, test it, write ``test.json``.

    Raises:
      CheckpointError: not a run, no completed generation yet, the
        grammar changed since the search, or the directory in use (``evolve``
        writing it: retrain holds the run's lock while it trains and writes).
      DataError: the data set cannot be loaded.
      TrainingDiverged: training diverged (nothing is written then; a ValueError).
      ValueError: ``epochs`` or ``batch_size`` below 1, ``minutes`` not positive.
    """
    _check_budget(epochs, batch_size)
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    with _held(run_dir) as (run, lock):
        if run.state is None or run.state.parent is None:
            raise files.CheckpointError(f"{run_dir}: no best individual yet (no completed generation)")
        phenotype = run.space().phenotype(run.state.parent)
        lock.announce()
        return _retrain(
            run, run_dir, phenotype, epochs, from_scratch, data_dir, seed, batch_size, curve, minutes, progress
        )


@contextlib.contextmanager
def _held(run_dir):
    """The run, read while this process holds its directory (:class:`~spenser_jax.run.files.RunLock`):
    retrain never reads a run that ``evolve`` is writing, nor writes beside it. The lock's holder is
    written only by ``lock.announce()``, once the run was accepted."""
    load_run(run_dir)  # not a run directory: refused before the lock makes anything there
    with files.RunLock(Path(run_dir), announce=False) as lock:
        yield load_run(run_dir), lock


def _retrain(run, run_dir, phenotype, epochs, from_scratch, data_dir, seed, batch_size, curve, minutes, progress):
    identity, state = run.identity, run.state
    trainer, train, test = _retraining(run, data_dir, batch_size, epochs)
    root = jax.random.key(identity["seed"] if seed is None else seed)
    params = None if from_scratch else state.parent_weights
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=epochs, desc="retraining", unit="epoch")

    test_key = jax.random.fold_in(root, _TEST_STREAM)
    points = []  # the learning curve, with --curve
    t0 = time.perf_counter()

    def after_epoch(epoch, metrics, state):
        seconds = time.perf_counter() - t0
        loss = float(metrics["loss"])
        if curve:
            accuracy, _, _ = trainer.score(phenotype, state.params, test, test_key)
            points.append({"epoch": epoch + 1, "loss": loss, "accuracy": accuracy, "seconds": seconds})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **({"test": f"{points[-1]['accuracy']:.4f}"} if curve else {}))
        # Another epoch as long as the slowest so far (the first compiles) must still fit.
        return minutes is not None and seconds / (epoch + 1) * (epoch + 2) > minutes * 60

    trained, info = trainer.train(
        phenotype, jax.random.fold_in(root, _RETRAIN_STREAM), train, params=params, after_epoch=after_epoch
    )
    if bar is not None:
        bar.close()
    if info["nonfinite"]:
        raise TrainingDiverged(f"training diverged (non-finite loss) after {info['steps']} steps; nothing written")
    trained_epochs = len(info["losses"])
    if curve:
        accuracy = points[-1]["accuracy"]
    else:
        accuracy, _, _ = trainer.score(phenotype, trained.params, test, test_key)
    result = {
        "accuracy": accuracy,
        "dataset": identity["dataset"],
        "epochs": trained_epochs,
        "from_scratch": from_scratch,
        "search_fitness": state.parent_fitness,
        "train_samples": int(train.labels.shape[0]),
        "test_samples": int(test.labels.shape[0]),
        "time_steps": identity["time_steps"],  # the data set's: retraining never searches at a lower T
        "losses": info["losses"],
        "phenotype": phenotype.text,
        "seconds": time.perf_counter() - t0,
        **({"minutes": minutes} if minutes is not None else {}),
        **({"curve": points} if curve else {}),
    }
    # The weights first: test.json says retraining finished, so it comes last.
    save_weights(Path(run_dir) / files.RETRAINED, phenotype.text, jax.device_get(trained.params))
    files.atomic_write(Path(run_dir) / files.TEST, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    raise SystemExit(main())
