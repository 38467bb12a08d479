"""``python -m spenser_jax.grammar GRAMMAR [--sample N | --mutate K] [--seed S] [--json [PATH]]``.

Prints random individuals of a grammar (their phenotype text; ``--json``
alone: the genotypes as JSON, one a line, instead; ``--json PATH``: those
written to PATH besides the text), or a random parent and K of its offspring, drawn and mutated as the
search does it with the default switches. Same seed, same output. Errors exit
1 with a one-line reason (grammar errors name the file and line); usage errors
exit 2 with the usage, as every command's.

This lives apart from the parser (``spenser_jax/grammar/__init__.py``), which
imports nothing else from spenser_jax: the sampler needs genotypes and
mutation, and they need the parser.
"""

from __future__ import annotations

import argparse

import numpy as np

from spenser_jax.errors import add_json_argument, command, count, write_json
from spenser_jax.genome import mutation
from spenser_jax.genome.space import SearchSpace, macro_for
from spenser_jax.grammar import load_grammar, locate


@command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spenser_jax.grammar",
        description="Sample individuals from a grammar and print their phenotypes.",
    )
    parser.add_argument("grammar", help="grammar file, e.g. grammars/csnn.grammar")
    parser.add_argument(
        "--sample",
        type=count,
        default=None,
        metavar="N",
        help="print N random individuals (default 1 without --mutate)",
    )
    parser.add_argument(
        "--mutate", type=count, default=None, metavar="K", help="print a random parent and K of its offspring"
    )
    parser.add_argument("--seed", type=count, default=0)
    add_json_argument(parser, "the genotypes (one a line)")
    args = parser.parse_args(argv)
    grammar = load_grammar(locate(args.grammar))
    # The grammar's own units (a loss unit) and options (skip connections), as a run takes them.
    space = SearchSpace(grammar, macro_for(grammar), levels_back=int(grammar.option("levels-back", 1)))
    rng = np.random.default_rng(args.seed)
    config = mutation.MutationConfig(
        add_connection=float(grammar.option("add-connection", 0.0)),
        remove_connection=float(grammar.option("remove-connection", 0.0)),
    )

    if args.mutate is None:
        genomes = [mutation.sample(rng, space, config) for _ in range(1 if args.sample is None else args.sample)]
    else:
        parent = mutation.sample(rng, space, config)
        genomes = [parent] + [mutation.offspring(rng, parent, space, config)[0] for _ in range(args.mutate)]
    if args.json != "-":
        for genome in genomes:
            print(space.phenotype(genome).text)
    if args.json:
        write_json(args.json, "".join(genome.dumps() + "\n" for genome in genomes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
