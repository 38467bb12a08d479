"""Learning unit -> optax: parity with torch.optim, traced genes, the ρ guard.

The reference trajectories come from tests/fixtures/make_torch_optim_reference.py
(torch, float64); the parity tests run in float64 too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spenser_jax.genome.phenotype import SGD, Adam, Dense, RMSProp
from spenser_jax.training import optim

FIXTURE = Path(__file__).parent / "fixtures" / "torch_optim.npz"


@pytest.fixture(scope="module")
def ref():
    data = np.load(FIXTURE)
    meta = json.loads(str(data["meta"]))
    leaves = meta["leaves"]
    return {
        "meta": meta,
        "init": {k: data[f"init/{k}"] for k in leaves},
        "noise": {k: data[f"noise/{k}"] for k in leaves},
        "traj": {v["name"]: {k: data[f"traj/{v['name']}/{k}"] for k in leaves} for v in meta["variants"]},
        "variants": {v["name"]: v for v in meta["variants"]},
    }


def _spec(variant: dict):
    cls = {"gradient-descent": SGD, "adam": Adam, "rmsprop": RMSProp}[variant["kind"]]
    return cls(**variant["hparams"])


def _trajectory(spec, hparams, init, noise, quad):
    """Parameters after each of len(noise) steps with grad = noise[t] + quad·p."""
    opt = optim.make_optimizer(spec, hparams)
    params = init
    state = opt.init(params)
    out = [params]
    steps = jax.tree.leaves(noise)[0].shape[0]
    for t in range(steps):
        grads = jax.tree.map(lambda n, p: n[t] + quad * p, noise, params)  # noqa: B023 (called at once)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *out)


def _run64(ref, spec, traced: bool):
    with jax.enable_x64(True):
        init = jax.tree.map(jnp.asarray, ref["init"])
        noise = jax.tree.map(jnp.asarray, ref["noise"])
        quad = ref["meta"]["quad"]
        if traced:
            hparams = {k: jnp.asarray(v) for k, v in optim.float_hparams(spec).items()}
            fn = jax.jit(lambda hp, p, n: _trajectory(spec, hp, p, n, quad))
            traj = fn(hparams, init, noise)
        else:
            traj = _trajectory(spec, None, init, noise, quad)
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(traj))
        return jax.tree.map(np.asarray, traj)


PARITY = ["sgd", "sgd_nesterov", "adam", "adam_amsgrad", "rmsprop", "rmsprop_rho_max"]


@pytest.mark.parametrize("traced", [False, True], ids=["constants", "traced"])
@pytest.mark.parametrize("name", PARITY)
def test_matches_torch(ref, name, traced):
    spec = _spec(ref["variants"][name])
    ours = _run64(ref, spec, traced)
    for leaf, expected in ref["traj"][name].items():
        np.testing.assert_allclose(ours[leaf], expected, rtol=1e-10, atol=1e-12, err_msg=f"{name}/{leaf}")


def test_fixture_exercises_amsgrad_max(ref):
    # If the running max never differed from the current second moment, the
    # amsgrad parity test could not tell torch's rule from plain Adam.
    for leaf in ref["init"]:
        diff = np.abs(ref["traj"]["adam_amsgrad"][leaf] - ref["traj"]["adam"][leaf]).max()
        assert diff > 1e-4


def test_rho_one_is_clamped_to_rho_max(ref):
    assert ref["meta"]["rho_max"] == optim.RHO_MAX, "regenerate the fixture"
    hp = ref["variants"]["rmsprop_rho1"]["hparams"]
    assert hp["rho"] == 1.0
    for traced in (False, True):
        ours = _run64(ref, RMSProp(**hp), traced)
        for leaf in ref["init"]:
            # Equal to torch at ρ = RHO_MAX ...
            np.testing.assert_allclose(ours[leaf], ref["traj"]["rmsprop_rho_max"][leaf], rtol=1e-10, atol=1e-12)
            # ... and bounded, where torch's raw ρ = 1 explodes (lr·g/eps per step).
            bound = hp["lr"] / np.sqrt(1 - optim.RHO_MAX) * (1 + 1e-9)
            assert np.abs(np.diff(ours[leaf], axis=0)).max() <= bound
            assert np.abs(np.diff(ref["traj"]["rmsprop_rho1"][leaf], axis=0)).max() > 1e3


def test_rho_between_rho_max_and_one_is_clamped(ref):
    hp = ref["variants"]["rmsprop_rho1"]["hparams"]
    at_one = _run64(ref, RMSProp(**hp), traced=False)
    near_one = _run64(ref, RMSProp(**{**hp, "rho": 0.9995}), traced=False)
    for leaf in ref["init"]:
        np.testing.assert_array_equal(near_one[leaf], at_one[leaf])


def test_rho_max_keyword(ref):
    init = jax.tree.map(jnp.asarray, ref["init"])
    noise = jax.tree.map(jnp.asarray, ref["noise"])
    spec = RMSProp(lr=0.01, rho=1.0, decay=1e-3)

    def run(spec, **kw):
        opt = optim.make_optimizer(spec, **kw)
        grads = jax.tree.map(lambda n: n[0], noise)
        updates, _ = opt.update(grads, opt.init(init), init)
        return updates

    clamped = run(spec, rho_max=0.99)
    plain = run(dataclasses.replace(spec, rho=0.99))
    jax.tree.map(np.testing.assert_array_equal, clamped, plain)
    for bad in (1.0, 1, 0.0, 1.5, None):
        with pytest.raises(ValueError, match="rho_max"):
            optim.make_optimizer(spec, rho_max=bad)


# One spec per static key; the float genes of the three offspring differ in
# every field (ρ = 1.0 also exercises the clamp under vmap).
VMAP_CASES = {
    "sgd": (
        SGD(0.05, 0.9, 1e-3, False),
        dict(lr=[0.01, 0.05, 0.1], momentum=[0.7, 0.9, 0.99], decay=[1e-6, 1e-4, 1e-3]),
    ),
    "sgd_nesterov": (
        SGD(0.05, 0.9, 1e-3, True),
        dict(lr=[0.01, 0.05, 0.1], momentum=[0.7, 0.9, 0.99], decay=[1e-6, 1e-4, 1e-3]),
    ),
    "adam": (
        Adam(0.01, 0.9, 0.999, 1e-3, False),
        dict(lr=[1e-3, 0.01, 0.1], beta1=[0.5, 0.8, 0.9999], beta2=[0.5, 0.9, 0.9999], decay=[1e-6, 1e-4, 1e-3]),
    ),
    "adam_amsgrad": (
        Adam(0.01, 0.9, 0.999, 1e-3, True),
        dict(lr=[1e-3, 0.01, 0.1], beta1=[0.5, 0.8, 0.9999], beta2=[0.5, 0.9, 0.9999], decay=[1e-6, 1e-4, 1e-3]),
    ),
    "rmsprop": (RMSProp(0.01, 0.9, 1e-3), dict(lr=[1e-3, 0.01, 0.1], rho=[0.5, 0.9, 1.0], decay=[1e-6, 1e-4, 1e-3])),
}


@pytest.mark.parametrize("name", list(VMAP_CASES))
def test_vmap_over_float_genes_traces_once(ref, name):
    # float64: in float32, 1 - 0.9999**t (Adam's bias correction) cancels
    # enough that vmapped and eager programs differ by ~1e-5 for reasons that
    # have nothing to do with which offspring got which genes.
    spec, values = VMAP_CASES[name]
    quad = ref["meta"]["quad"]
    traces = []

    def train(hparams, params, noise):
        traces.append(1)  # runs at trace time only
        return _trajectory(spec, hparams, params, noise, quad)

    with jax.enable_x64(True):
        init = jax.tree.map(jnp.asarray, ref["init"])
        noise = jax.tree.map(jnp.asarray, ref["noise"])
        batched = jax.jit(jax.vmap(train, in_axes=(0, None, None)))
        hparams = {k: jnp.asarray(v) for k, v in values.items()}
        got = batched(hparams, init, noise)
        # Other float genes, same program.
        got_again = batched({k: v[::-1] for k, v in hparams.items()}, init, noise)
        assert len(traces) == 1

        for i in range(3):
            genes = {k: v[i] for k, v in values.items()}
            alone = _trajectory(dataclasses.replace(spec, **genes), None, init, noise, quad)
            for leaf in init:
                np.testing.assert_allclose(got[leaf][i], alone[leaf], rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(got_again[leaf][2 - i], alone[leaf], rtol=1e-10, atol=1e-12)


def test_static_key_and_float_hparams():
    a, b = Adam(0.01, 0.9, 0.999, 1e-3, True), Adam(0.1, 0.5, 0.6, 1e-5, True)
    assert optim.static_key(a) == optim.static_key(b)
    assert optim.static_key(a) != optim.static_key(dataclasses.replace(a, amsgrad=False))
    assert optim.static_key(SGD(0.1, 0.9, 1e-3, False)) != optim.static_key(RMSProp(0.1, 0.9, 1e-3))
    hash(optim.static_key(a))
    assert optim.float_hparams(b) == dict(lr=0.1, beta1=0.5, beta2=0.6, decay=1e-5)
    assert optim.float_hparams(RMSProp(0.1, 0.9, 1e-3)) == dict(lr=0.1, rho=0.9, decay=1e-3)


@pytest.mark.parametrize("fn", [optim.make_optimizer, optim.float_hparams, optim.static_key])
@pytest.mark.parametrize("bad", [Dense(10, True), "adam", None])
def test_unknown_spec_type(fn, bad):
    with pytest.raises(TypeError, match="not a learning unit"):
        fn(bad)


def test_bad_hparams():
    spec = SGD(0.1, 0.9, 1e-3, False)
    with pytest.raises(ValueError, match="unknown hyperparameter 'rho'"):
        optim.make_optimizer(spec, {"rho": 0.9})
    with pytest.raises(ValueError, match="must be a scalar"):
        optim.make_optimizer(spec, {"lr": jnp.ones(3)})
