"""Data parallel through MindSpore's msrun on CPU: 2 workers, same seed, sharded data, averaged gradients,
identical weights on both ranks, only rank 0 writes, validation over the whole split (summed counts)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_engine import TINY_PLUGIN, recipe  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow

#: the helper every worker runs: train, then dump this rank's weights for the test to compare
WORKER = TINY_PLUGIN + '''
import os
import mindspore as ms
from mindplug.engine.cli import main_script
from mindplug.engine.config import load_config, parse_overrides
from mindplug.engine.trainer import Trainer

if __name__ == "__main__":
    path, pairs, _ = parse_overrides(sys.argv[1:])
    trainer = Trainer(load_config(path, pairs))
    code = trainer.run()
    ms.save_checkpoint(trainer.net, os.path.join(os.environ["RANK_DUMP"], f"rank{trainer.rt.rank}.ckpt"))
    sys.exit(code)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")
def test_two_workers_on_cpu(tmp_path):
    tmp = str(tmp_path)
    worker = os.path.join(tmp, "worker.py")
    with open(worker, "w", encoding="utf-8") as handle:
        handle.write(WORKER)
    # 50 validation images: shards of 25 each; 40 training images: 20 per rank = 5 steps of 4
    cfg = recipe(tmp, "dp", model="tinynet", image_resize=16, num_samples=50, batch_size=4, epoch_size=2,
                 distribute=True, decay_epochs=2)
    dump = os.path.join(tmp, "ranks")
    os.makedirs(dump)
    # msrun starts each worker with the `python` on PATH: make it this interpreter
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, RANK_DUMP=dump, GLOG_v="3", PYTHONUNBUFFERED="1", PATH=path)
    proc = subprocess.run(["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_port",
                           str(_free_port()), "--log_dir", os.path.join(tmp, "msrun_log"), "--join", "True",
                           worker, "--config", cfg], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp)
    logs = ""
    for name in sorted(os.listdir(os.path.join(tmp, "msrun_log"))):
        with open(os.path.join(tmp, "msrun_log", name), encoding="utf-8", errors="replace") as handle:
            logs += f"--- {name}\n" + handle.read()[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs

    import mindspore as ms

    rank0 = ms.load_checkpoint(os.path.join(dump, "rank0.ckpt"))
    rank1 = ms.load_checkpoint(os.path.join(dump, "rank1.ckpt"))
    assert set(rank0) == set(rank1)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name].asnumpy(), rank1[name].asnumpy(), err_msg=name)

    folder = os.path.join(tmp, "dp")
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["val_images"] == 50 for row in history)  # both shards counted, none twice
    state = ms.load_checkpoint(os.path.join(folder, "state", "tinynet-2_6.ckpt"))
    loop = json.loads(state["mindplug.train_state"])
    assert loop["world"] == 2 and loop["steps_per_epoch"] == 6
    # trained weights differ from the initial ones and the state file holds rank 0's (= every rank's)
    np.testing.assert_array_equal(state["classifier.weight"].asnumpy(), rank0["classifier.weight"].asnumpy())
    worker1 = [n for n in os.listdir(os.path.join(tmp, "msrun_log")) if "worker_1" in n]
    with open(os.path.join(tmp, "msrun_log", worker1[0]), encoding="utf-8", errors="replace") as handle:
        assert "saved " not in handle.read()  # only rank 0 writes and reports
