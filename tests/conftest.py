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
