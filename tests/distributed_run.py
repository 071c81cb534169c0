"""A child process for tests/test_distributed.py: one run (or one process of a multi-process
run) of a config, with `interrupt_at` (a Ctrl-C after that step) or `kill_at` (SIGKILL when
asked for that step's batch) for resume tests. Devices and the distributed runtime are set by
the parent through the environment and the config's overrides.

    python tests/distributed_run.py '{"config": PATH, "overrides": [...], "interrupt_at": 4}'
"""

import json
import os
import signal
import sys

from jaxlstm.train import loader
from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment

def kill_when_asked_for(step: int) -> None:
    """SIGKILL this process when the loop asks for the batch of `step` (after `step` steps,
    their metrics and checkpoints): a kill -9 at a known point, on every process alike."""
    original = loader.TrainBatches.__next__

    def next_or_die(self):
        if self.state()["next_index"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self)

    loader.TrainBatches.__next__ = next_or_die


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    if request.get("kill_at") is not None:
        kill_when_asked_for(request["kill_at"])
    config = load_config(request["config"], request["overrides"])
    result = run_experiment(config, interrupt_at=request.get("interrupt_at"))
    print(json.dumps({"status": result.status, "run_dir": result.run_dir, "step": result.step,
                      "devices": result.summary.get("devices"),
                      "processes": result.summary.get("processes")}))
