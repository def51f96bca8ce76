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

from test_engine import TINY_PLUGIN, recipe, tiny_cli  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.slow

#: the helper every worker runs: train, then dump this rank's weights for the test to compare
WORKER = TINY_PLUGIN + '''
import os
import mindspore as ms
from mindplug.engine.cli import main_script
from mindplug.engine.cli import _recipe_parser, parse
from mindplug.engine.jobs import training_job
from mindplug.engine.recipe import load_recipe
from mindplug.engine.trainer import Trainer

if __name__ == "__main__":
    args, pairs = parse(_recipe_parser("train", ""), sys.argv[1:])
    trainer = Trainer(training_job(load_recipe(args.config, pairs)))
    if os.environ.get("DIE_AFTER_EPOCH"):  # a kill at an epoch boundary, once that epoch's state is saved
        epoch_once = trainer._epoch

        def epoch_then_die(epoch, stop):
            code = epoch_once(epoch, stop)
            if epoch + 1 == int(os.environ["DIE_AFTER_EPOCH"]):
                os._exit(0)
            return code

        trainer._epoch = epoch_then_die
    code = trainer.run()
    ms.save_checkpoint(trainer.net, os.path.join(os.environ["RANK_DUMP"], f"rank{trainer.rt.rank}.ckpt"))
    sys.exit(code)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


needs_msrun = pytest.mark.skipif(shutil.which("msrun") is None, reason="msrun (MindSpore's launcher) is not on PATH")


def _msrun(tmp: str, worker: str, cfg: str, label: str, *extra: str, command: tuple = (), killed: bool = False,
           **env_extra: str) -> str:
    """Runs ``worker [command] --config cfg [extra]`` on 2 msrun workers; returns the folder holding each
    rank's final weights. The workers' logs are in ``tmp/msrun_log-label``."""
    dump = os.path.join(tmp, "ranks-" + label)
    os.makedirs(dump)
    log_dir = os.path.join(tmp, "msrun_log-" + label)
    # msrun starts each worker with the `python` on PATH: make it this interpreter
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, RANK_DUMP=dump, GLOG_v="3", PYTHONUNBUFFERED="1", PATH=path, **env_extra)
    proc = subprocess.run(["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_port",
                           str(_free_port()), "--log_dir", log_dir, "--join", "True",
                           worker, *command, "--config", cfg, *extra], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp)
    logs = ""
    for name in sorted(os.listdir(log_dir)):
        with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as handle:
            logs += f"--- {name}\n" + handle.read()[-3000:]
    # a killed worker makes msrun report the job as failed; that run is checked by what it left behind
    assert killed or proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    return dump


def _worker_log(tmp: str, label: str, rank: int) -> str:
    """What worker ``rank`` of the msrun job ``label`` printed."""
    log_dir = os.path.join(tmp, "msrun_log-" + label)
    name = next(n for n in os.listdir(log_dir) if f"worker_{rank}" in n)
    with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _weights(path: str) -> dict:
    import mindspore as ms

    return {name: param.asnumpy() for name, param in ms.load_checkpoint(path).items()}


def _dp_recipe(tmp: str, name: str) -> str:
    # 50 validation images: shards of 25 each; 40 training images: 20 per rank = 5 steps of 4
    return recipe(tmp, name, model="tinynet", image_resize=16, num_samples=50, batch_size=4, epoch_size=2,
                  distribute=True, decay_epochs=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-epoch data-parallel run: (tmp folder, worker script, rank-dump folder)."""
    tmp = str(tmp_path_factory.mktemp("msrun"))
    worker = os.path.join(tmp, "worker.py")
    with open(worker, "w", encoding="utf-8") as handle:
        handle.write(WORKER)
    return tmp, worker, _msrun(tmp, worker, _dp_recipe(tmp, "dp"), "full")


@needs_msrun
def test_two_workers_on_cpu(uninterrupted):
    tmp, _, dump = uninterrupted
    rank0 = _weights(os.path.join(dump, "rank0.ckpt"))
    rank1 = _weights(os.path.join(dump, "rank1.ckpt"))
    assert set(rank0) == set(rank1)
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)

    folder = os.path.join(tmp, "dp")
    with open(os.path.join(folder, "log.json"), encoding="utf-8") as handle:
        history = json.load(handle)
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["val_images"] == 50 for row in history)  # both shards counted, none twice
    import mindspore as ms

    state = ms.load_checkpoint(os.path.join(folder, "state", "tinynet-2_6.ckpt"))
    loop = json.loads(state["mindplug.train_state"])
    assert loop["world"] == 2 and loop["steps_per_epoch"] == 6
    # trained weights differ from the initial ones and the state file holds rank 0's (= every rank's)
    np.testing.assert_array_equal(state["classifier.weight"].asnumpy(), rank0["classifier.weight"])
    assert "saved " not in _worker_log(tmp, "full", 1)  # only rank 0 writes and reports


@needs_msrun
def test_two_workers_resume_at_an_epoch_boundary_equals_uninterrupted(uninterrupted):
    """An msrun run killed after an epoch and resumed ends with the uninterrupted run's weights."""
    tmp, worker, full = uninterrupted
    cfg = _dp_recipe(tmp, "dp-resumed")
    _msrun(tmp, worker, cfg, "first", killed=True, DIE_AFTER_EPOCH="1")
    with open(os.path.join(tmp, "dp-resumed", "log.json"), encoding="utf-8") as handle:
        assert [row["epoch"] for row in json.load(handle)] == [1]
    resumed = _msrun(tmp, worker, cfg, "rest", "--resume", "True")
    with open(os.path.join(tmp, "dp-resumed", "log.json"), encoding="utf-8") as handle:
        assert [row["epoch"] for row in json.load(handle)] == [1, 2]
    expected = _weights(os.path.join(full, "rank0.ckpt"))
    for rank in (0, 1):
        got = _weights(os.path.join(resumed, f"rank{rank}.ckpt"))
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=f"rank {rank}: {name}")


@needs_msrun
def test_bench_under_msrun_reports_the_group(tmp_path):
    """`msrun ... bench`: one table, from rank 0, whose img/s counts both workers' batches."""
    tmp = str(tmp_path)
    _msrun(tmp, tiny_cli(tmp), _dp_recipe(tmp, "bench"), "bench", "--steps", "2", "--json",
           command=("bench",))
    rank0, rank1 = _worker_log(tmp, "bench", 0), _worker_log(tmp, "bench", 1)
    rows = json.loads(rank0[rank0.index("[\n"):rank0.index("\n]") + 2])
    assert [r["phase"] for r in rows] == ["train", "infer"]
    for row in rows:
        assert row["workers"] == 2 and row["batch_size"] == 4
        assert row["img_per_s"] == pytest.approx(2 * 4000.0 / row["ms_per_step"])
    assert '"img_per_s"' not in rank1  # one report for the group


#: every rank offers gradients filled with rank + 1 (and one with its rank id); the reducer must return
#: their mean, in the parameters' shapes, on every rank
REDUCER_SHAPES = [(3, 2, 5, 5), (7,), (1,), (4, 9)]
REDUCER_WORKER = '''
import json, os, sys
import numpy as np
import mindspore as ms
from mindplug.engine.runtime import join_msrun_group
from mindplug.engine.steps import grad_reducer

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)
rank, world = join_msrun_group()
shapes = [tuple(s) for s in json.loads(os.environ["REDUCER_SHAPES"])]
params = [ms.Parameter(ms.Tensor(np.zeros(s, np.float32)), name=f"p{i}") for i, s in enumerate(shapes)]
values = [np.full(s, rank + 1.0, np.float32) for s in shapes]
values[3] += rank * np.arange(36, dtype=np.float32).reshape(4, 9)
grads = tuple(ms.Tensor(v) for v in values)
out = grad_reducer(params, world, "CPU")(grads)
with open(os.path.join(os.environ["RANK_DUMP"], f"rank{rank}.json"), "w") as handle:
    json.dump([o.asnumpy().tolist() for o in out], handle)
'''


@needs_msrun
def test_cpu_grad_reducer_averages_over_ranks(tmp_path):
    tmp = str(tmp_path)
    worker = os.path.join(tmp, "reduce.py")
    with open(worker, "w", encoding="utf-8") as handle:
        handle.write(REDUCER_WORKER)
    dump = _msrun(tmp, worker, "unused.yaml", "reduce", REDUCER_SHAPES=json.dumps(REDUCER_SHAPES))
    expected = [np.full(s, 1.5, np.float32) for s in REDUCER_SHAPES]
    expected[3] += np.arange(36, dtype=np.float32).reshape(4, 9) * 0.5  # rank 0 adds 0, rank 1 adds arange
    for rank in (0, 1):
        with open(os.path.join(dump, f"rank{rank}.json"), encoding="utf-8") as handle:
            got = [np.asarray(g, np.float32) for g in json.load(handle)]
        assert [g.shape for g in got] == REDUCER_SHAPES
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
