import sys
from pathlib import Path

# `helpers` is a plain module beside the tests, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The lm-evaluation-harness tests read local JSON tasks: nothing may be downloaded, and the
# datasets cache goes to a scratch directory instead of the user's ~/.cache.
import os
import tempfile

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="aunet-tests-hf-"))
# One intra-op thread, here and in every subprocess (set before anything imports torch): the
# test models are tiny, so a second thread costs more than it gives (the model tests ran in 17 s
# with one thread, 26 s with two, idle 2-core machine), two threads per process oversubscribe a
# machine that other jobs share, and every test process then sums in the same order.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis budgets: "ci" (CI=true in the environment) runs every property test at its full
# count, as each test's examples(n) states it; "dev", the default, a fifth of that, for the
# edit-test loop. HYPOTHESIS_PROFILE=ci picks the full counts by hand. Neither has a deadline
# or the too-slow health check: both time examples, and a loaded machine would fail them.
_untimed = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, **_untimed)
settings.register_profile("dev", max_examples=20, **_untimed)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

from segment_fixtures import STRATEGY_ARGS, sample_texts, segment, write_jsonl  # noqa: E402
from train_run import TRAINED_EXTRA, TRAINED_STEPS, overrides, run  # noqa: E402


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Segmented training data (stdlib/, 3000 documents) and held-out data (heldout/, 300)."""
    root = tmp_path_factory.mktemp("train-data")
    write_jsonl(root / "a.jsonl", sample_texts(3000))
    segment(root / "a.jsonl", "--out", root / "stdlib", *STRATEGY_ARGS)
    write_jsonl(root / "b.jsonl", sample_texts(300, seed=7))
    segment(root / "b.jsonl", "--out", root / "heldout", *STRATEGY_ARGS)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_root) -> Path:
    """One 6-step run of 2 CPU ranks under ZeRO-3 (train_run.overrides plus TRAINED_EXTRA):
    checkpoints at steps 2, 4 and 6, every one kept; held-out bpb at steps 3 and 6; TensorBoard
    and W&B logs. Launched once per session for every test that only reads a trained run; tests
    that change it work on a copy."""
    dump = tmp_path_factory.mktemp("trained") / "run"
    run([*overrides(data_root, dump, TRAINED_STEPS), *TRAINED_EXTRA])
    return dump


@pytest.fixture(scope="session")
def trained_export(tmp_path_factory, trained_run) -> Path:
    """`aunet export` of trained_run's newest checkpoint (step 6)."""
    import subprocess

    from helpers import cpu_dist_env, venv_script

    out = tmp_path_factory.mktemp("trained-export") / "export"
    proc = subprocess.run([venv_script("aunet"), "export", "--checkpoints", str(trained_run / "checkpoints"), "--out", str(out)],
                          capture_output=True, text=True, env=cpu_dist_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# Fixtures that launch the DeepSpeed launcher (once per session) or read what it wrote: a test
# using one belongs to the distributed tier, which `make test-fast` leaves out.
LAUNCHING_FIXTURES = {"trained_run", "trained_export"}


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if LAUNCHING_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("distributed") is None]
    if unmarked:
        raise pytest.UsageError("mark these @pytest.mark.distributed: they use the session's trained run ("
                                + ", ".join(sorted(LAUNCHING_FIXTURES)) + "):\n  " + "\n  ".join(unmarked))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of `item` is set up (a session fixture may launch): only a test marked
    distributed may start the DeepSpeed launcher (helpers.deepspeed_cmd refuses otherwise)."""
    import helpers

    helpers.LAUNCHER_ALLOWED = item.get_closest_marker("distributed") is not None


def pytest_report_header(config):
    """Memory the distributed tests will share, printed at the top of the run: when a CI run is
    slow or killed, the log then says whether RAM or /dev/shm (tmpfs, also RAM) was short."""
    import psutil

    from helpers import DS_SHM_BUFFERS

    mem = psutil.virtual_memory()
    shm = psutil.disk_usage("/dev/shm") if Path("/dev/shm").is_dir() else None
    line = f"memory: {mem.available / 2**30:.1f} of {mem.total / 2**30:.1f} GiB available"
    if shm is not None:
        line += f"; /dev/shm: {shm.used / 2**30:.1f} of {shm.total / 2**30:.1f} GiB used"
        stale = list(Path("/dev/shm").glob(DS_SHM_BUFFERS))
        if stale:
            line += f" ({len(stale)} DeepSpeed buffers left by earlier runs; see docs/troubleshooting.md)"
    return line
