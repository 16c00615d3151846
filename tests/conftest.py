import sys
from pathlib import Path

# `helpers` is a plain module beside the tests, not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
