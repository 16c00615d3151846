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
