"""Checkpoint directories: only complete ones are picked; pruning keeps the newest K."""

from aunet.training.checkpoint import complete_steps, latest_complete, mark_complete, prune, tag_for
from aunet.training.lr_schedule import lr_factor


def fake_save(root, step, size=100):
    d = root / tag_for(step)
    (d / "zero").mkdir(parents=True)
    (d / "zero" / "rank0.pt").write_bytes(b"x" * size)
    (d / "loader_rank0.json").write_text("{}")
    return d


def test_incomplete_and_truncated_checkpoints_are_never_picked(tmp_path):
    fake_save(tmp_path, 10)
    mark_complete(tmp_path, 10, {})
    fake_save(tmp_path, 20)  # crashed before the marker
    assert latest_complete(tmp_path) == 10
    d30 = fake_save(tmp_path, 30)
    mark_complete(tmp_path, 30, {})
    assert latest_complete(tmp_path) == 30
    (d30 / "zero" / "rank0.pt").write_bytes(b"x" * 50)  # truncated after the fact
    assert latest_complete(tmp_path) == 10
    assert latest_complete(tmp_path / "nothing-here") is None


def test_prune_keeps_the_newest_k_and_drops_crash_leftovers(tmp_path):
    for step in (1, 2, 4):
        fake_save(tmp_path, step)
        mark_complete(tmp_path, step, {})
    fake_save(tmp_path, 3)  # a save that crashed before its marker
    fake_save(tmp_path, 5)  # a save in progress (newer than every complete one): kept
    assert prune(tmp_path, keep=2) == [1, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [tag_for(2), tag_for(4), tag_for(5)]
    assert complete_steps(tmp_path) == [2, 4]


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    f = [lr_factor(s, warmup=10, total_steps=110, lr_min_ratio=0.01) for s in range(1, 111)]
    assert f[0] == 0.1 and f[9] == 1.0
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # monotone decay after warmup
    assert abs(f[-1] - 0.01) < 1e-12
    assert abs(lr_factor(60, 10, 110, 0.01) - (0.01 + 0.99 * 0.5)) < 1e-12  # halfway: the mean


def test_linear_and_constant_schedules():
    linear = [lr_factor(s, 10, 110, 0.1, "linear") for s in (10, 60, 110)]
    assert all(abs(a - b) < 1e-12 for a, b in zip(linear, [1.0, 0.55, 0.1]))
    assert lr_factor(100, 10, 110, 0.1, "constant") == 1.0
    assert lr_factor(5, 10, 110, 0.1, "constant") == 0.5  # warmup still applies
