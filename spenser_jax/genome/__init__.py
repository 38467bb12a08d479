"""The genome: genotypes, their decoding into phenotypes, mutation, and the random draws they share.

The layer after the grammar and before the spiking network: nothing here
imports JAX but :mod:`spenser_jax.genome.draws`.
"""
