"""A full disk, for real: `jaxlstm train` on a small tmpfs ends in one line, exit 1 and status
"write_failed", with the folder consistent; once there is room, `--resume` completes it.

orbax (through tensorstore) reports a full disk as `ValueError("RESOURCE_EXHAUSTED ...")`
from several threads at once, not as an `OSError`: only a real full file system shows what a
user would see. The file system is a tmpfs mounted in a private mount namespace
(`unshare -rm`, no root needed where user namespaces are allowed); where they are not, the
test is skipped (tests/test_run_faults.py injects ENOSPC into the runner's own writes).
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.test_cli import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the namespace: mount a tmpfs too small for every checkpoint, train, report;
# grow it, resume, report. The mount vanishes with the namespace, so it reports on stdout.
DRIVER = r"""
import glob, json, subprocess, sys
where, args = sys.argv[1], json.loads(sys.argv[2])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=360k", "tmpfs", where], check=True)

def train(*extra):
    done = subprocess.run([sys.executable, "-m", "jaxlstm.cli", "train", "quickstart", *args,
                           f"runs_root={where}/runs", *extra], capture_output=True, text=True)
    (summary,) = glob.glob(f"{where}/runs/quickstart/*/summary.json")
    with open(summary) as f:
        return {"code": done.returncode, "stderr": done.stderr.splitlines(),
                "summary": json.load(f)}

full = train()
subprocess.run(["mount", "-o", "remount,size=8m", where], check=True)
print(json.dumps({"full": full, "resumed": train("--resume")}))
"""


def namespaces_allowed():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not namespaces_allowed(),
                    reason="needs `unshare -rm` (user and mount namespaces) to mount a tmpfs")
def test_a_full_disk_ends_the_run_in_one_line_and_a_resume_completes_it(tmp_path):
    args = [*TINY, "training.steps=40", "checkpointing.every=10", "training.eval_every=10"]
    child = subprocess.run(["unshare", "-rm", sys.executable, "-c", DRIVER, str(tmp_path),
                            json.dumps(args)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, check=False)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout)
    full, resumed = report["full"], report["resumed"]
    assert full["code"] == 1, full["stderr"]
    assert full["summary"]["status"] == "write_failed"
    (said,) = [line for line in full["stderr"] if not line.startswith("run folder ")]
    assert said.startswith("could not write to ") and "No space left on device" in said
    assert resumed["code"] == 0, resumed["stderr"]
    assert (resumed["summary"]["status"], resumed["summary"]["step"]) == ("completed", 40)


def test_only_a_failed_write_becomes_an_os_error():
    from jaxlstm.train.checkpoint import _write_errors_as_os_errors

    full = ValueError("RESOURCE_EXHAUSTED: Error writing local file \"x\": Failed to write 4288 "
                      "bytes to file 6: No space left on device [os_error_code='28']")
    with pytest.raises(OSError) as raised, _write_errors_as_os_errors("/runs/x/checkpoints"):
        raise full
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/runs/x/checkpoints"
    # XLA's out-of-memory error shares the status word, not the meaning: it goes through.
    with pytest.raises(RuntimeError), _write_errors_as_os_errors("/runs/x/checkpoints"):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8 GiB")
    with pytest.raises(ValueError, match="unrelated"), _write_errors_as_os_errors("/x"):
        raise ValueError("unrelated")
