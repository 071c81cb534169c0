"""The memory check before a run: configs too large for the machine are refused in one line
naming the key, before anything is allocated or any folder made; the shipped configs fit."""

import resource
import types

import pytest

from jaxlstm.cli import main, shipped
from jaxlstm.tasks import make_task, needs_extra
from jaxlstm.train import memory
from jaxlstm.train.config import ConfigError, load_config

HUGE = 10**9


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("override, starts", [
    (f"model.hidden_size={HUGE}",  # adam: 3 x 16 EB, a copy on each of the 2 CPU devices
     (f"config error: model.hidden_size: {HUGE} needs about 96 EB for the parameters and "
      "optimizer state (16 EB of parameters, a copy on each of 2 devices); this machine has ")),
    (f"training.batch_size={HUGE}",
     f"config error: training.batch_size: {HUGE} sequences of 50 steps need about "),
    (f"task.options.seq_len={HUGE}",
     (f"config error: task.options.seq_len: {HUGE}: building the adding task's data ran out "
      "of memory (Unable to allocate ")),
], ids=["hidden_size", "batch_size", "seq_len"])
def test_a_config_too_large_is_one_line_exit_2_and_leaves_no_folder(override, starts, tmp_path,
                                                                    capsys):
    assert main(["train", "quickstart", override, f"runs_root={tmp_path}",
                 "logging.progress=false"]) == 2
    assert one_line(capsys).startswith(starts)
    assert list(tmp_path.iterdir()) == []


def test_the_estimate_compares_with_the_hosts_memory_or_the_devices_limit(monkeypatch):
    config = load_config(shipped.resolve("quickstart"))
    task = make_task(config.task.name, **config.task.options)
    memory.check_fits(config, task)  # 24 GB hosts and CI fit the quickstart

    monkeypatch.setattr(memory, "_host_available", lambda: 10**5)
    with pytest.raises(ConfigError, match=r"^model\.hidden_size: 64 needs about 413 kB for "
                                          r"the parameters .*; this machine has 100 kB\.$"):
        memory.check_fits(config, task)

    gpu = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100",
                                memory_stats=lambda: {"bytes_limit": 80 * 10**9})
    monkeypatch.setattr(memory.jax, "local_devices", lambda: [gpu])
    assert memory.available_memory() == (80 * 10**9, "each NVIDIA H100 holds")


def test_the_batch_is_split_over_the_devices_and_the_state_is_not():
    config = load_config(shipped.resolve("quickstart"), ["training.batch_size=4096"])
    spec = make_task(config.task.name, **config.task.options).spec
    row = (50, 404)
    one = memory.batch_bytes(config, spec, *row, 4096, "cpu")
    # Enough for the state and the whole batch on one device, not for four copies of the
    # state with a quarter of the batch each when the state is made large.
    assert not memory.refusal(config, spec, row, available=int(one * 1.2), where="has")
    assert memory.refusal(config, spec, row, available=int(one * 0.9), where="has").startswith(
        "training.batch_size: 4096 sequences of 50 steps")
    assert not memory.refusal(config, spec, row, available=int(one * 0.9), where="has",
                              local_devices=1, devices=4)


def test_the_parameter_shapes_are_traced_not_allocated():
    config = load_config(shipped.resolve("quickstart"), ["model.hidden_size=100000"])
    spec = make_task(config.task.name, **config.task.options).spec
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params, state = memory.state_bytes(config, spec)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert params > 160 * 10**9 and state > 2 * params  # 4 x 10^10 float32 weights, and adam's
    assert grown_kb < 200_000


def test_every_shipped_config_fits_at_its_own_size():
    """The configs a user runs first are never refused (on the 24 GB machines CI uses)."""
    for name in shipped.names():
        config = load_config(shipped.resolve(name))
        extra = needs_extra(config.task.name)
        if extra and not extra.installed():
            continue
        task = make_task(config.task.name, **config.task.options)
        memory.check_fits(config, task)
        params, state = memory.state_bytes(config, task.spec)
        assert 0 < params < state < 10**8, name


def test_bytes_read_in_decimal_units():
    assert [memory.format_bytes(n) for n in (0, 999, 2_500, 48 * 10**18, 21.4 * 10**9)] == [
        "0 B", "999 B", "2.5 kB", "48 EB", "21 GB"]
