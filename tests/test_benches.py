"""The benchmark scripts run (tiny sizes) and write the JSON the tables of docs/benchmarks.md come from."""

import json
import subprocess
import sys

import pytest

from helpers import REPO_ROOT

# Slow tier: every benchmark's quick run in a subprocess, 33 s in all (2-core machine, 2026-12-05).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script, keys", [
    ("bench_segment.py", {"rows", "threads"}),
    ("bench_pipeline.py", {"end_to_end_text_mb_s", "stage_share", "reference_pipeline_text_mb_s"}),
    ("bench_loader.py", {"ours_bytes_per_s", "naive_bytes_per_s", "x_paper_consumption_per_gpu"}),
    ("bench_hf.py", {"rows", "transformers"}),
])
def test_bench_quick_run_writes_json(tmp_path, script, keys):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benches" / script), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert keys <= set(result)
    if script == "bench_segment.py":
        assert {r["strategy"] for r in result["rows"]} >= {"word1+word2", "pretok", "punct"}
        assert all(r["oracle_mb_s"] > 0 and r["ours_1t_mb_s"] > 0 for r in result["rows"])
    if script == "bench_hf.py":
        assert all(r["same_bytes"] and r["max_logit_diff"] <= 1e-5 and r["hf_bytes_per_s"] > 0 for r in result["rows"])
