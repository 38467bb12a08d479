"""After the search: train the best individual further and test it.

``python -m spenser_jax.retrain RUN_DIR [--epochs 50] [--from-scratch] [--curve] [--minutes M] [--json [PATH]]``

As the paper: the run's best individual (the checkpoint's parent) trains
``--epochs`` more epochs on the whole train split (EvoTrain + Fitness, or the
run's stratified subset of it), then its accuracy on the official test split
is written to ``RUN_DIR/test.json`` and printed. By default training continues
from the weights it had after its evaluation during the search (with a fresh
optimizer state: the search keeps no optimizer state); ``--from-scratch``
starts from new weights. ``--curve`` also tests after every epoch (the
learning curve, in ``test.json``); ``--minutes`` ends training after the last
epoch that fits in that many minutes (at most ``--epochs``; the epochs run are
the first of a longer retraining, so ``--epochs N`` repeats them exactly).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

from spenser_jax import checkpoint
from spenser_jax.errors import (
    SpenserError,
    add_json_argument,
    command,
    count,
    positive_float,
    positive_int,
    write_json,
)
from spenser_jax.fitness import Trainer, on_device

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
    add_json_argument(parser, "the result (test.json's content)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
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
      CheckpointError: not a run, no completed generation yet, or the
        grammar changed since the search.
      DataError: the data set cannot be loaded.
      TrainingDiverged: training diverged (nothing is written then; a ValueError).
      ValueError: ``epochs`` or ``batch_size`` below 1, ``minutes`` not positive.
    """
    if epochs < 1 or batch_size is not None and batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if minutes is not None and not minutes > 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    run = checkpoint.load_run(run_dir)
    identity, state = run.identity, run.state
    if state is None or state.parent is None:
        raise checkpoint.CheckpointError(f"{run_dir}: no best individual yet (no completed generation)")
    phenotype = run.space().phenotype(state.parent)
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
    root = jax.random.key(identity["seed"] if seed is None else seed)
    train, test = on_device(splits.train), on_device(splits.test)
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
        phenotype, jax.random.fold_in(root, _RETRAIN_STREAM), train, epochs, params=params, after_epoch=after_epoch
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
        "train_samples": int(len(splits.train.labels)),
        "test_samples": int(len(splits.test.labels)),
        "time_steps": protocol.time_steps,
        "losses": info["losses"],
        "phenotype": phenotype.text,
        "seconds": time.perf_counter() - t0,
        **({"minutes": minutes} if minutes is not None else {}),
        **({"curve": points} if curve else {}),
    }
    # The weights first: test.json says retraining finished, so it comes last.
    checkpoint.save_weights(Path(run_dir) / checkpoint.RETRAINED, phenotype.text, jax.device_get(trained.params))
    checkpoint.atomic_write(Path(run_dir) / checkpoint.TEST, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    raise SystemExit(main())
