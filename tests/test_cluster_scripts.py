"""scripts/cluster/: the SLURM batch script and the DeepSpeed hostfile example, checked without a
cluster. train.sbatch runs under bash with a fake SLURM environment and fake `scontrol`, `srun`
and `deepspeed` first on PATH: the fake srun runs its command once per fake node (with that
node's SLURM_NODEID), and the fake deepspeed records what it was given. Where DeepSpeed is
importable, the recorded launcher commands also go through DeepSpeed's own runner and per-node
launcher (with process creation faked) to get the rank every process would have."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT

CLUSTER = REPO_ROOT / "scripts" / "cluster"
SBATCH = CLUSTER / "train.sbatch"
HOSTFILE_EXAMPLE = CLUSTER / "hostfile.example"

HOSTS = ["gpu017", "gpu018", "gpu020"]
NODELIST = "gpu[017-018,020]"
JOB_ID = 73123
GPUS = 4
DEFAULT_PORT = 29500 + JOB_ID % 1000

# Launcher flags that take no value (every other option takes one).
LAUNCHER_SWITCHES = {"--no_ssh", "--no_ssh_check", "--force_multi", "--module", "--no_python",
                     "--no_local_rank", "--save_pid", "--bind_cores_to_rank", "-q", "--quiet"}

FAKE_SCONTROL = """\
import json, os, sys
with open(os.path.join(os.environ["FAKE_LOG"], "scontrol.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] != ["show", "hostnames"] or len(sys.argv) != 4:
    sys.exit(f"fake scontrol: unsupported call {sys.argv[1:]}")
print("\\n".join(os.environ["FAKE_HOSTS"].split()))
"""

# Options must be --name=value (or a bare switch), so that where the command starts is plain.
FAKE_SRUN = """\
import json, os, subprocess, sys
args = sys.argv[1:]
opts = {}
while args and args[0].startswith("-"):
    name, _, value = args.pop(0).partition("=")
    opts[name] = value
with open(os.path.join(os.environ["FAKE_LOG"], "srun.jsonl"), "a") as f:
    f.write(json.dumps({"opts": opts, "command": args}) + "\\n")
hosts = os.environ["FAKE_HOSTS"].split()
for node in range(int(opts["--nodes"])):
    env = dict(os.environ, SLURM_NODEID=str(node), SLURM_PROCID=str(node), SLURM_LOCALID="0",
               SLURMD_NODENAME=hosts[node], SLURM_STEP_ID="0")
    rc = subprocess.call(args, env=env, cwd=opts.get("--chdir") or None)
    if rc:
        sys.exit(rc)
"""

FAKE_DEEPSPEED = """\
import json, os, sys
argv = sys.argv[1:]
hostfile = None
for i, arg in enumerate(argv):
    if arg.startswith("--hostfile="):
        hostfile = arg.split("=", 1)[1]
    elif arg in ("--hostfile", "-H"):
        hostfile = argv[i + 1]
node = os.environ.get("SLURM_NODEID")
text = open(hostfile).read() if hostfile else None
copy = None
if text is not None:
    copy = os.path.join(os.environ["FAKE_LOG"], f"hostfile.node{node}")
    with open(copy, "w") as f:
        f.write(text)
record = {"argv": argv, "node": node, "nodename": os.environ.get("SLURMD_NODENAME"),
          "cwd": os.getcwd(), "hostfile": text, "hostfile_copy": copy}
with open(os.path.join(os.environ["FAKE_LOG"], "deepspeed.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\\n")
sys.exit(3 if os.environ.get("FAKE_FAIL_NODE") == node else 0)
"""


def _write_fake(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def _jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run_sbatch(tmp_path: Path, *args: str, script: Path = SBATCH, hosts=HOSTS, **env_extra: str):
    """Run the batch script as the batch host (node 0) of a fake job would; return the process and
    what the fakes recorded."""
    fakebin, log, tmp = tmp_path / "bin", tmp_path / "log", tmp_path / "tmp"
    for d in (fakebin, log, tmp):
        d.mkdir(exist_ok=True)
    _write_fake(fakebin / "scontrol", FAKE_SCONTROL)
    _write_fake(fakebin / "srun", FAKE_SRUN)
    _write_fake(fakebin / "deepspeed", FAKE_DEEPSPEED)
    env = {
        # A clean environment: no AUNET_* or MASTER_* from the caller's shell.
        "PATH": f"{fakebin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "TMPDIR": str(tmp),
        "FAKE_LOG": str(log),
        "FAKE_HOSTS": " ".join(hosts),
        "SLURM_JOB_ID": str(JOB_ID),
        "SLURM_JOB_NAME": "aunet",
        "SLURM_JOB_NODELIST": NODELIST,
        "SLURM_NNODES": str(len(hosts)),
        "SLURM_JOB_NUM_NODES": str(len(hosts)),
        "SLURM_NODEID": "0",  # what the batch step itself sees
        "SLURM_PROCID": "0",
        "SLURM_SUBMIT_DIR": str(REPO_ROOT),
        "SLURM_GPUS_ON_NODE": str(GPUS),
        "SLURM_CPUS_PER_TASK": "16",
    }
    env.update(env_extra)
    proc = subprocess.run(["bash", str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return proc, {
        "scontrol": _jsonl(log / "scontrol.jsonl"),
        "srun": _jsonl(log / "srun.jsonl"),
        "deepspeed": _jsonl(log / "deepspeed.jsonl"),
        "tmp_left": sorted(p.name for p in tmp.iterdir()),
    }


def split_launcher_argv(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """`deepspeed [options] script args...` -> ({option: value}, [script, args...])."""
    opts: dict[str, object] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        value: str | bool
        if "=" in arg:
            name, value = arg.split("=", 1)
        elif arg in LAUNCHER_SWITCHES:
            name, value = arg, True
        else:
            name, value = arg, argv[i + 1]
            i += 1
        assert name not in opts, f"launcher option {name} given twice: {argv}"
        opts[name] = value
        i += 1
    return opts, argv[i:]


def parse_hostfile(text: str) -> dict[str, int]:
    """DeepSpeed's hostfile format, strictly: `hostname slots=N` lines, '#' comment lines, blanks."""
    hosts: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\S+)\s+slots=([1-9][0-9]*)", line)
        assert m, f"hostfile line {n} is not 'hostname slots=N': {line!r}"
        assert m[1] not in hosts, f"hostfile names {m[1]} twice"
        hosts[m[1]] = int(m[2])
    assert hosts, "hostfile lists no host"
    return hosts


def check_node_commands(records: list[dict], hosts: list[str], gpus: int, port: int, train_args: list[str]) -> None:
    """Every node ran the launcher once, in no-ssh mode, with its own node rank, the first host as
    master, the job's shape, and the same training command."""
    assert [r["node"] for r in records] == [str(i) for i in range(len(hosts))]
    for node, r in enumerate(records):
        opts, user = split_launcher_argv(r["argv"])
        assert opts.get("--no_ssh") is True, opts
        assert opts["--node_rank"] == str(node), f"node {node} ({r['nodename']}) got node_rank {opts['--node_rank']}"
        assert opts["--master_addr"] == hosts[0]
        assert opts["--master_port"] == str(port)
        assert opts["--num_nodes"] == str(len(hosts))
        assert opts["--num_gpus"] == str(gpus)
        assert set(opts) == {"--hostfile", "--no_ssh", "--node_rank", "--master_addr", "--master_port", "--num_nodes", "--num_gpus"}
        assert parse_hostfile(r["hostfile"]) == {h: gpus for h in hosts}
        assert list(parse_hostfile(r["hostfile"])) == hosts  # order decides which node is which
        assert user == train_args, f"node {node}: {user} != {train_args}"
        assert Path(r["cwd"]) == REPO_ROOT


def test_sbatch_is_valid_bash_with_its_header_before_any_command():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    lines = SBATCH.read_text().splitlines()
    assert lines[0] in ("#!/bin/bash", "#!/usr/bin/env bash")
    header: dict[str, str] = {}
    first_command = None
    for n, line in enumerate(lines[1:], 2):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            first_command = n
            break
        if stripped.startswith("#SBATCH"):
            name, _, value = stripped.removeprefix("#SBATCH").strip().partition("=")
            header[name] = value
    # sbatch stops reading #SBATCH lines at the first command, silently.
    assert all(not l.lstrip().startswith("#SBATCH") for l in lines[first_command - 1:])
    assert lines[first_command - 1].strip() == "set -euo pipefail"
    assert int(header["--nodes"]) >= 2
    assert header["--ntasks-per-node"] == "1"
    assert int(header["--gpus-per-node"]) >= 1
    assert re.fullmatch(r"\d+(:\d\d){1,2}|\d+-\d+(:\d\d){0,2}", header["--time"])
    assert header["--output"]


def test_every_node_runs_the_same_training_command_with_its_own_rank(tmp_path):
    extra = ["optim.lr=1e-4", "name=run with spaces", "--stop-at", "1000"]
    proc, rec = run_sbatch(tmp_path, *extra, AUNET_CONFIG="configs/aunet3_1b.yaml",
                           AUNET_DATA_ROOT="/shared/shards", AUNET_DUMP_DIR="/shared/runs/a3")
    assert proc.returncode == 0, proc.stderr
    assert rec["scontrol"] == [["show", "hostnames", NODELIST]]
    [srun] = rec["srun"]
    assert srun["opts"]["--nodes"] == srun["opts"]["--ntasks"] == str(len(HOSTS))
    assert srun["opts"]["--ntasks-per-node"] == "1"
    assert srun["opts"]["--cpus-per-task"] == "16"  # srun >= 22.05 does not inherit it
    train_args = ["aunet/train.py", "--config", "configs/aunet3_1b.yaml", "data.root_dir=/shared/shards",
                  "dump_dir=/shared/runs/a3", *extra]
    check_node_commands(rec["deepspeed"], HOSTS, GPUS, DEFAULT_PORT, train_args)
    assert rec["tmp_left"] == []  # each node removed its hostfile


def test_defaults_and_environment_settings(tmp_path):
    proc, rec = run_sbatch(tmp_path, SLURM_GPUS_ON_NODE="8")
    assert proc.returncode == 0, proc.stderr
    check_node_commands(rec["deepspeed"], HOSTS, 8, DEFAULT_PORT, ["aunet/train.py", "--config", "configs/aunet2_1b.yaml"])

    (tmp_path / "log" / "deepspeed.jsonl").unlink()
    proc, rec = run_sbatch(tmp_path, "steps=10", AUNET_GPUS_PER_NODE="2", AUNET_MASTER_PORT="31234", AUNET_STOP_AT="5",
                           AUNET_CONFIG="configs/tiny_aunet3.yaml")
    assert proc.returncode == 0, proc.stderr
    check_node_commands(rec["deepspeed"], HOSTS, 2, 31234,
                        ["aunet/train.py", "--config", "configs/tiny_aunet3.yaml", "steps=10", "--stop-at", "5"])


def test_two_nodes(tmp_path):
    proc, rec = run_sbatch(tmp_path, hosts=["a1", "b7"], SLURM_JOB_NODELIST="a1,b7")
    assert proc.returncode == 0, proc.stderr
    check_node_commands(rec["deepspeed"], ["a1", "b7"], GPUS, DEFAULT_PORT, ["aunet/train.py", "--config", "configs/aunet2_1b.yaml"])


@pytest.mark.parametrize("needle, mutant", [
    ('--node_rank="$SLURM_NODEID"', "--node_rank=0"),
    ("MASTER_ADDR=${hosts[0]}", "MASTER_ADDR=${hosts[-1]}"),
    ("printf '%s' \"$AUNET_NODE_HOSTFILE\" >", "printf '%s' \"$AUNET_NODE_HOSTFILE\" | sort -r >"),
    ('train_args+=("$@")', 'train_args+=("${@:2}")'),
])
def test_the_checks_fail_on_a_broken_script(tmp_path, needle, mutant):
    text = SBATCH.read_text()
    assert text.count(needle) == 1, needle
    broken = tmp_path / "broken.sbatch"
    broken.write_text(text.replace(needle, mutant))
    proc, rec = run_sbatch(tmp_path, "steps=3", script=broken)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AssertionError):
        check_node_commands(rec["deepspeed"], HOSTS, GPUS, DEFAULT_PORT,
                            ["aunet/train.py", "--config", "configs/aunet2_1b.yaml", "steps=3"])


@pytest.mark.parametrize("env, message", [
    ({"SLURM_NNODES": "2"}, "scontrol lists 3 hosts"),
    ({"AUNET_CONFIG": "configs/no_such.yaml"}, "not found"),
    ({"AUNET_GPUS_PER_NODE": "eight"}, "positive integer"),
    ({"SLURM_SUBMIT_DIR": "/"}, "no aunet/train.py"),
])
def test_bad_settings_fail_before_srun(tmp_path, env, message):
    proc, rec = run_sbatch(tmp_path, **env)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert rec["srun"] == [] and rec["deepspeed"] == []


def test_missing_slurm_environment_fails(tmp_path):
    proc, rec = run_sbatch(tmp_path, SLURM_JOB_NODELIST="")
    assert proc.returncode != 0 and "SLURM_JOB_NODELIST" in proc.stderr
    assert rec["srun"] == []


def test_a_failing_node_fails_the_job_and_cleans_up(tmp_path):
    proc, rec = run_sbatch(tmp_path, FAKE_FAIL_NODE="1")
    assert proc.returncode == 3
    assert [r["node"] for r in rec["deepspeed"]] == ["0", "1"]
    assert rec["tmp_left"] == []


def test_hostfile_example_has_deepspeeds_format():
    text = HOSTFILE_EXAMPLE.read_text()
    hosts = parse_hostfile(text)
    assert len(hosts) >= 2
    [command] = [l.lstrip("# ").strip() for l in text.splitlines() if l.lstrip("# ").startswith("deepspeed --hostfile")]
    argv = shlex.split(command)
    opts, user = split_launcher_argv(argv[1:])
    assert opts["--hostfile"] == "scripts/cluster/hostfile"
    assert opts["--master_addr"] == next(iter(hosts))  # the first line holds global rank 0
    assert user[0] == "aunet/train.py" and (REPO_ROOT / user[0]).is_file()
    assert (REPO_ROOT / user[user.index("--config") + 1]).is_file()


# --- with DeepSpeed's own code -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ds_launcher():
    import deepspeed.launcher.launch as launch  # a pinned dependency: a missing one must fail, not skip
    import deepspeed.launcher.runner as runner
    return runner, launch


def test_deepspeed_parses_both_hostfiles(ds_launcher, tmp_path):
    runner, _ = ds_launcher
    assert runner.fetch_hostfile(str(HOSTFILE_EXAMPLE)) == parse_hostfile(HOSTFILE_EXAMPLE.read_text())
    proc, rec = run_sbatch(tmp_path)
    assert proc.returncode == 0, proc.stderr
    for r in rec["deepspeed"]:
        assert runner.fetch_hostfile(r["hostfile_copy"]) == {h: GPUS for h in HOSTS}
    # and DeepSpeed's parser is no looser than ours on what matters
    bad = tmp_path / "bad_hostfile"
    bad.write_text("gpu017 slots=4\ngpu017 slots=4\n")
    with pytest.raises(ValueError):
        runner.fetch_hostfile(str(bad))


def test_hostfile_example_command_uses_real_launcher_flags(ds_launcher):
    runner, _ = ds_launcher
    text = HOSTFILE_EXAMPLE.read_text()
    [command] = [l.lstrip("# ").strip() for l in text.splitlines() if l.lstrip("# ").startswith("deepspeed --hostfile")]
    args = runner.parse_args(shlex.split(command)[1:])  # argparse exits on an unknown flag
    assert args.hostfile == "scripts/cluster/hostfile" and args.user_script == "aunet/train.py"


class _FakeProcess:
    def __init__(self, launched: list, cmd, env=None, **_):
        launched.append((list(cmd), dict(env or {})))
        self.pid = 40000 + len(launched)
        self.returncode = 0

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0

    def send_signal(self, sig):
        pass


def _ranks_deepspeed_would_start(runner, launch, argv: list[str]) -> list[tuple[list[str], dict]]:
    """Run DeepSpeed's runner on one node's launcher argv, then its per-node launcher on what the
    runner would exec; both with process creation faked. Returns the (cmd, env) of every rank."""
    launched: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner.subprocess, "Popen", lambda cmd, **kw: _FakeProcess(launched, cmd, **kw))
        runner.main(argv)
        [(cmd, _)] = launched  # no ssh: one local launcher per node, nothing remote
        assert cmd[1:4] == ["-u", "-m", "deepspeed.launcher.launch"], cmd
        launched.clear()
        mp.setattr(sys, "argv", ["launch.py", *cmd[4:]])
        mp.setattr(launch.time, "sleep", lambda s: None)
        mp.setattr(launch.signal, "signal", lambda *a: None)
        launch.main()
    return launched


def test_deepspeed_gives_every_process_a_distinct_rank(ds_launcher, tmp_path):
    runner, launch = ds_launcher
    proc, rec = run_sbatch(tmp_path, "steps=7", "--stop-at", "3")
    assert proc.returncode == 0, proc.stderr
    world = len(HOSTS) * GPUS
    seen = []
    for node, r in enumerate(rec["deepspeed"]):
        argv = [f"--hostfile={r['hostfile_copy']}" if a.startswith("--hostfile=") else a for a in r["argv"]]
        ranks = _ranks_deepspeed_would_start(runner, launch, argv)
        assert len(ranks) == GPUS
        for local, (cmd, env) in enumerate(ranks):
            assert env["LOCAL_RANK"] == str(local)
            assert env["RANK"] == str(node * GPUS + local)
            assert env["WORLD_SIZE"] == str(world)
            assert env["MASTER_ADDR"] == HOSTS[0] and env["MASTER_PORT"] == str(DEFAULT_PORT)
            assert cmd[2:] == ["aunet/train.py", f"--local_rank={local}", "--config", "configs/aunet2_1b.yaml",
                               "steps=7", "--stop-at", "3"]
            seen.append(int(env["RANK"]))
    assert sorted(seen) == list(range(world))


def test_trainer_cli_accepts_the_command(tmp_path, monkeypatch):
    """The arguments each rank gets (launcher's --local_rank first, --stop-at after the overrides)
    parse with aunet/train.py's own command line."""
    import aunet.config
    from aunet.train import main as train_main

    class Parsed(Exception):
        pass

    def fake_load_config(path, overrides):
        raise Parsed(path, list(overrides))

    monkeypatch.setattr(aunet.config, "load_config", fake_load_config)
    proc, rec = run_sbatch(tmp_path, "optim.lr=2e-4", "--stop-at", "9", AUNET_DATA_ROOT="/d", AUNET_DUMP_DIR="/r")
    assert proc.returncode == 0, proc.stderr
    _, user = split_launcher_argv(rec["deepspeed"][1]["argv"])
    with pytest.raises(Parsed) as parsed:
        train_main(["--local_rank=2", *user[1:]])
    assert parsed.value.args == ("configs/aunet2_1b.yaml", ["data.root_dir=/d", "dump_dir=/r", "optim.lr=2e-4"])
