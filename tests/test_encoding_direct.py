"""Tests for spenser_jax.snn.encoding.direct: the image as a constant input current."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spenser_jax.snn import encoding


def test_uint8_images_become_intensities_at_every_step():
    images = np.array([[[0, 51], [204, 255]]], dtype=np.uint8)  # [1, 2, 2]
    currents = encoding.direct(images, 4)
    assert currents.shape == (4, 1, 2, 2) and currents.dtype == jnp.float32
    expected = np.array([[[0.0, 0.2], [0.8, 1.0]]], dtype=np.float32)
    for t in range(4):
        np.testing.assert_allclose(np.asarray(currents[t]), expected, rtol=1e-6)
    # The same scale as rate's spike probabilities: p = x / 255 exactly.
    np.testing.assert_array_equal(np.asarray(currents[0]), np.asarray(jnp.asarray(images).astype(jnp.float32) / 255))


def test_colour_batch_shape_and_float_images_unchanged():
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 3)).astype(np.float32)
    currents = encoding.direct(images, 5)
    assert currents.shape == (5, 3, 32, 32, 3) and currents.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(currents), np.broadcast_to(images, (5, *images.shape)))
    half = encoding.direct(jnp.asarray(images, jnp.bfloat16), 2)
    assert half.dtype == jnp.bfloat16  # floats keep their dtype


def test_jit_with_static_time_steps_and_zero_steps():
    images = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    direct_jit = jax.jit(encoding.direct, static_argnames="time_steps")
    np.testing.assert_array_equal(direct_jit(images, 3), encoding.direct(images, 3))
    assert encoding.direct(images, 0).shape == (0, 2, 3)
    with pytest.raises(TypeError, match="static Python int"):
        jax.jit(encoding.direct)(images, 3)


@pytest.mark.parametrize(
    "time_steps, error, match",
    [
        (-1, ValueError, ">= 0"),
        (2.0, TypeError, "static Python int"),
    ],
)
def test_bad_time_steps(time_steps, error, match):
    with pytest.raises(error, match=match):
        encoding.direct(np.zeros((2, 2), np.uint8), time_steps)


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.bool_])
def test_other_integer_images_are_refused(dtype):
    with pytest.raises(TypeError, match="uint8 .* or floating point"):
        encoding.direct(np.zeros((2, 2), dtype), 3)
