"""The results cache survives SIGKILL at any instant and concurrent runs (sims.runner).

A subprocess runs a small, fast, test-only experiment (many settings, one batch each, a few
hundred kB per result so that kills land inside writes too) and is killed with SIGKILL at random
instants, many times; a final rerun without ``--overwrite`` must finish and leave a folder whose
result files are byte-identical to an uninterrupted run's.  Run as a script, this file is that
subprocess: ``python tests/test_runner_kill.py OUT``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sims.runner as runner  # noqa: E402
from sims.experiments import Experiment  # noqa: E402
from sims.runner import ResultCache, ResultFileError, load_table, run_experiment  # noqa: E402

N_SETTINGS = 40
# The files record the git commit and dirty flag of the run that wrote them; other work in the
# checkout may change those between two runs of this test, so every run here records this one.
FIXED_PROVENANCE = {
    "package_version": "test",
    "git_commit": "0" * 40,
    "git_dirty": False,
    "python": "test",
}


@pytest.fixture(autouse=True)
def _fixed_provenance(monkeypatch):
    monkeypatch.setattr(runner, "_PROVENANCE", dict(FIXED_PROVENANCE))


def _settings(quick):
    return [
        {"id": f"killtoy/x={x}", "x": x, "seed": x, "n_seeds": 1} for x in range(N_SETTINGS)
    ]


def _run_batch(batch):
    out = []
    for s in batch:
        rng = np.random.default_rng(s["seed"])
        out.append({"y": rng.standard_normal(30_000), "x": np.array([s["x"]])})
    return out


KILLTOY = Experiment(
    "killtoy",
    "test-only: fast settings, big enough files",
    1,
    _settings,
    lambda s: (s["id"],),
    _run_batch,
    lambda table: [],
)


def _script(out, *extra):
    return [sys.executable, __file__, str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _snapshot(folder: Path) -> dict:
    """name -> bytes of the result files; sidecars compared without their runtime."""
    snap = {}
    for p in sorted(folder.iterdir()):
        if p.suffix == ".npz":
            snap[p.name] = p.read_bytes()
        elif p.suffix == ".json":
            side = json.loads(p.read_text())
            side.pop("runtime_s")
            snap[p.name] = side
        else:
            snap[p.name] = "unexpected file"
    return snap


def _n_done(out: Path) -> int:
    folder = out / "killtoy"
    return len(list(folder.glob("*.npz"))) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    t0 = time.perf_counter()
    subprocess.run(_script(out), check=True, env=_env(), capture_output=True)
    return _snapshot(out / "killtoy"), time.perf_counter() - t0


def test_sigkill_at_random_instants_then_rerun_is_byte_identical(tmp_path, clean):
    ref, t_clean = clean
    assert len(ref) == 2 * N_SETTINGS
    rnd = random.Random(1234)
    n_kills, n_rounds, n_tmp = 0, 0, 0
    deadline = time.perf_counter() + 15.0
    while n_kills < 20 and time.perf_counter() < deadline:
        out = tmp_path / f"round{n_rounds}"
        n_rounds += 1
        for _ in range(12):  # kill the same folder's sweep repeatedly, at random instants
            proc = subprocess.Popen(
                _script(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            # random instant in the write phase: after 0-3 more commits, plus 0-30 ms
            target = _n_done(out) + rnd.randint(0, 3)
            while _n_done(out) < target and proc.poll() is None:
                time.sleep(0.001)
            time.sleep(rnd.uniform(0.0, 0.03))
            if proc.poll() is not None:
                break  # the sweep finished before the kill: start the next round
            os.kill(proc.pid, signal.SIGKILL)
            n_kills += 1
            proc.wait()
        n_tmp += len(list((out / "killtoy").glob(".*.tmp"))) if (out / "killtoy").is_dir() else 0
        res = subprocess.run(_script(out), env=_env(), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        assert _snapshot(out / "killtoy") == ref
    print(f"{n_kills} kills in {n_rounds} rounds, {n_tmp} temp files left by killed writes")
    assert n_kills >= 6, f"only {n_kills} kills landed (clean run {t_clean:.2f} s)"


def test_two_runs_in_the_same_folder_at_once(tmp_path, clean):
    ref, _ = clean
    procs = [
        subprocess.Popen(_script(tmp_path), env=_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert _snapshot(tmp_path / "killtoy") == ref


def test_truncated_file_is_named_and_recomputed(tmp_path, clean, capsys):
    ref, _ = clean
    run_experiment(KILLTOY, out=tmp_path, progress=False)
    victim = sorted((tmp_path / "killtoy").glob("*.npz"))[3]
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(ResultFileError, match=victim.name):
        load_table(tmp_path, KILLTOY)
    h = victim.stem
    with pytest.raises(ResultFileError, match=str(victim)):
        ResultCache(tmp_path, "killtoy").load(h)
    capsys.readouterr()
    run_experiment(KILLTOY, out=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert str(victim) in err and "recomputing" in err
    assert _snapshot(tmp_path / "killtoy") == ref


def test_permissions_follow_umask_and_stale_tmp_is_cleaned(tmp_path):
    old = os.umask(0o022)
    try:
        folder = tmp_path / "killtoy"
        folder.mkdir()
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        host = os.uname().nodename.replace(".", "_")
        stale = folder / f".abc.npz.{host}.{dead.pid}.00ff00ff.tmp"
        live = folder / f".abd.npz.{host}.{os.getppid()}.00ff00ff.tmp"
        stale.write_bytes(b"partial")
        live.write_bytes(b"in flight")
        run_experiment(KILLTOY, out=tmp_path, progress=False)
        assert not stale.exists() and live.exists()
        for p in folder.glob("*.*"):
            if not p.name.startswith("."):
                assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


if __name__ == "__main__":
    runner._PROVENANCE = dict(FIXED_PROVENANCE)
    run_experiment(KILLTOY, out=sys.argv[1], progress=False)
