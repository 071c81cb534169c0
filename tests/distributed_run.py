"""A child process for tests/test_distributed.py: one run (or one process of a multi-process
run) of a config, with `interrupt_at` for resume tests. Devices and the distributed runtime
are set by the parent through the environment and the config's overrides.

    python tests/distributed_run.py '{"config": PATH, "overrides": [...], "interrupt_at": 4}'
"""

import json
import sys

from jaxlstm.train.config import load_config
from jaxlstm.train.run import run_experiment

if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    config = load_config(request["config"], request["overrides"])
    result = run_experiment(config, interrupt_at=request.get("interrupt_at"))
    print(json.dumps({"status": result.status, "run_dir": result.run_dir, "step": result.step,
                      "devices": result.summary.get("devices"),
                      "processes": result.summary.get("processes")}))
