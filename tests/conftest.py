"""Test-wide settings: strict rank promotion, two CPU devices for the sharding tests, and
compilation made cheap, since compiling (not running) is what the tests spend their time on."""

import os
import shutil
import tempfile


def _add_xla_flag(flag):
    name = flag.split("=")[0]
    if name not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


# Must be set before jax initialises its backends; subprocesses the tests start inherit them.
# Two devices, not eight: on 2-core machines eight fake devices can deadlock in collectives.
_add_xla_flag("--xla_force_host_platform_device_count=2")
# LLVM at -O0 compiles the tests' small programs about 2-3x faster; the programs run slower,
# which their tiny arrays do not notice. XLA's own graph passes (fusion and so on) still run.
_add_xla_flag("--xla_backend_optimization_level=0")


def _xla_parses(flag_name: str) -> bool:
    """Whether this jaxlib's XLA knows `flag_name`: an unknown flag in XLA_FLAGS aborts the
    process at jax's first backend call, so a flag that a later jaxlib drops must be left out,
    not fail the suite. XLA parses its flags from names compiled into jaxlib's shared library."""
    import importlib.util
    import mmap

    spec = importlib.util.find_spec("jaxlib")
    library = os.path.join(os.path.dirname(spec.origin), "libjax_common.so") if spec else ""
    if not os.path.isfile(library):
        return False
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(flag_name.encode() + b"\0") >= 0


# XLA:CPU's older elemental emitters instead of its MLIR fusion emitters: compiling the same
# jaxlstm programs (an LSTM, sLSTM, mLSTM, minLSTM and GRU forward+backward) took 3.4-4.1
# CPU-s instead of 7.2 on jaxlib 0.10.2; the results agree to the last bit in that check and
# within every test's tolerance. Users' programs compile with XLA's defaults.
if _xla_parses("xla_cpu_use_fusion_emitters"):
    _add_xla_flag("--xla_cpu_use_fusion_emitters=false")

# A compilation cache for this session only: eager calls retrace the scan with a new closure
# each time, and tests and the processes they start compile the same programs again, which
# then load from disk instead of compiling. The environment carries it into subprocesses.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE_DIR = tempfile.mkdtemp(prefix="jaxlstm-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
else:
    _CACHE_DIR = None

import jax

# Silent broadcasting between arrays of different ranks is an error in the tests (as in
# equinox and rlax), so the library cannot rely on it by accident.
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds of CPU; still part of the default run (and CI)")


def pytest_unconfigure(config):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops jax's in-memory caches of compiled programs after each test module. A whole
    suite in one process otherwise keeps every executable it ever compiled: 8 GB resident by
    the end, and XLA:CPU then crashed with SIGSEGV inside `executable.serialize()` (jax's
    persistent-cache write) at the same test in three full runs of 2026-12-07, never when
    the same files ran alone. With the caches dropped per module the same tree passed
    (2.5 GB peak, 1020 CPU-s against 1100 to the crash point): what a later module needs
    again loads from the persistent cache on disk instead."""
    yield
    jax.clear_caches()
