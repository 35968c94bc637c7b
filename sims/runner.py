r"""The sweep runner: a results cache keyed by a hash of the settings, resumable, never silent.

Layout: ``<out>/<experiment>/<hash>.npz`` (the result arrays) and ``<hash>.json`` (the sidecar:
settings, seed, package version, git commit, runtime).  Both are written atomically (temporary
file in the same folder, then ``os.replace``), the sidecar last, so a file pair exists only for a
finished setting.  An interrupted sweep therefore resumes by computing exactly the settings whose
pair is missing.  An existing result is never replaced unless ``overwrite=True``.

The hash covers the experiment name, its code ``version`` and every field of the setting (seeds
included), so a changed setting or a bumped experiment version is a cache miss, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["setting_hash", "ResultCache", "run_experiment", "load_table", "provenance"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = Path("results")


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"setting values must be JSON data, got {type(o).__name__}")


def setting_hash(experiment: str, version: int, setting: dict) -> str:
    """16 hex digits of sha256 over (experiment, version, setting) in canonical JSON."""
    return hashlib.sha256(
        _canonical({"experiment": experiment, "version": version, "setting": setting}).encode()
    ).hexdigest()[:16]


_PROVENANCE: dict | None = None


def provenance() -> dict:
    """Package version and git commit (``"unknown"`` outside a git checkout / before a commit)."""
    global _PROVENANCE
    if _PROVENANCE is None:
        try:
            from importlib.metadata import version

            pkg = version("tsallis-continuum")
        except Exception:  # noqa: BLE001 - not installed: fall back to the module attribute
            import tsallis

            pkg = getattr(tsallis, "__version__", "unknown")
        commit, dirty = "unknown", None
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.returncode == 0:
                commit = out.stdout.strip()
                st = subprocess.run(
                    ["git", "status", "--porcelain"],
                    cwd=REPO_ROOT,
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                dirty = bool(st.stdout.strip()) if st.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
        _PROVENANCE = {
            "package_version": pkg,
            "git_commit": commit,
            "git_dirty": dirty,
            "python": sys.version.split()[0],
        }
    return dict(_PROVENANCE)


def _atomic_write(path: Path, write_fn) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class ResultCache:
    """One ``.npz`` + ``.json`` pair per setting under ``root/experiment``."""

    def __init__(self, root, experiment: str):
        self.dir = Path(root) / experiment
        self.experiment = experiment

    def paths(self, h: str) -> tuple[Path, Path]:
        return self.dir / f"{h}.npz", self.dir / f"{h}.json"

    def has(self, h: str) -> bool:
        npz, side = self.paths(h)
        return npz.is_file() and side.is_file()

    def save(self, h: str, setting: dict, arrays: dict, meta: dict, *, overwrite: bool) -> None:
        npz, side = self.paths(h)
        if not overwrite and (npz.exists() or side.exists()):
            raise FileExistsError(
                f"result for {setting.get('id', h)} already exists at {npz}; pass overwrite=True "
                "(CLI: --overwrite) to replace it"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if v.dtype == object:
                raise TypeError(f"result array {k!r} has dtype object; use numeric arrays")
        _atomic_write(npz, lambda f: np.savez(f, **arrays))
        sidecar = {
            "hash": h,
            "experiment": self.experiment,
            "id": setting.get("id"),
            "seed": setting.get("seed"),
            "n_seeds": setting.get("n_seeds"),
            "settings": setting,
            **meta,
            **provenance(),
        }
        _atomic_write(
            side,
            lambda f: f.write(
                json.dumps(sidecar, indent=1, sort_keys=True, default=_json_default).encode()
            ),
        )

    def load(self, h: str) -> tuple[dict, dict]:
        npz, side = self.paths(h)
        with np.load(npz) as z:
            arrays = {k: z[k] for k in z.files}
        return arrays, json.loads(side.read_text())


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm.auto import tqdm

    # delay: only sweeps that take longer than a couple of seconds show a bar
    return tqdm(
        total=total,
        desc=desc,
        unit="setting",
        delay=2.0,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def run_experiment(
    experiment,
    *,
    quick: bool = False,
    out=None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Compute every missing setting of ``experiment`` and return its full results table.

    ``experiment`` is a :class:`sims.experiments.Experiment`.  Settings are grouped by the
    experiment's ``batch_key`` and each group runs as one array program; every finished setting
    is written at once, so an interrupted sweep loses at most the batch in flight.
    """
    out = Path(out) if out is not None else DEFAULT_RESULTS
    cache = ResultCache(out, experiment.name)
    settings = experiment.settings(quick)
    ids = [s["id"] for s in settings]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"experiment {experiment.name}: duplicate setting ids {dup[:5]}")
    hashes = [setting_hash(experiment.name, experiment.version, s) for s in settings]
    todo = [(h, s) for h, s in zip(hashes, settings, strict=False) if overwrite or not cache.has(h)]
    batches: dict = {}
    for h, s in todo:
        batches.setdefault(experiment.batch_key(s), []).append((h, s))
    bar = _progress_bar(len(todo), f"{experiment.name}{' (quick)' if quick else ''}", progress)
    try:
        for group in batches.values():
            t0 = time.perf_counter()
            results = experiment.run_batch([s for _, s in group])
            if len(results) != len(group):
                raise RuntimeError(
                    f"{experiment.name}.run_batch returned {len(results)} results "
                    f"for {len(group)} settings"
                )
            dt = (time.perf_counter() - t0) / len(group)
            for (h, s), arrays in zip(group, results, strict=False):
                cache.save(
                    h,
                    s,
                    arrays,
                    {"runtime_s": dt, "version": experiment.version},
                    overwrite=overwrite,
                )
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    return load_table(out, experiment, quick=quick)


def load_table(out, experiment, *, quick: bool = False) -> list[dict]:
    """The results table of the given preset: one row per setting (settings + arrays).

    Raises FileNotFoundError naming the missing settings if the sweep has not finished.
    """
    cache = ResultCache(out, experiment.name)
    rows, missing = [], []
    for s in experiment.settings(quick):
        h = setting_hash(experiment.name, experiment.version, s)
        if not cache.has(h):
            missing.append(s["id"])
            continue
        arrays, _meta = cache.load(h)
        rows.append({**s, **arrays, "hash": h})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} settings of {experiment.name} have no results in {cache.dir} "
            f"(first: {missing[:3]}); run `python -m sims run {experiment.name}"
            f"{' --quick' if quick else ''}`"
        )
    return rows
