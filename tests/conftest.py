"""Test-wide settings: strict rank promotion, and two CPU devices for the sharding tests."""

import os

# Must be set before jax initialises its backends. Two devices, not eight: on 2-core machines
# eight fake devices can deadlock in collectives.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()

import jax  # noqa: E402

# Silent broadcasting between arrays of different ranks is an error in the tests (as in
# equinox and rlax), so the library cannot rely on it by accident.
jax.config.update("jax_numpy_rank_promotion", "raise")
