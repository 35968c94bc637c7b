r"""The sweep runner: a results cache keyed by a hash of the settings, resumable, never silent.

Layout: ``<out>/<experiment>/<hash>.npz``, one file per finished setting, holding the result
arrays and, under the key ``__meta__``, the setting's metadata as UTF-8 JSON (experiment, code
version, settings, seed, package version, git commit).  That file is the commit: it is written to
a temporary file in the same folder (``.<hash>.npz.<host>.<pid>.<random>.tmp``), flushed,
fsync'ed and moved into place in one atomic step (``os.link``, which refuses to replace an
existing result, or ``os.replace`` when overwriting), then the folder is fsync'ed.  A setting is
therefore either absent or complete, whatever instant a run is killed at, and the file's bytes
depend only on the setting and the code (fixed zip timestamps, sorted keys), so a resumed sweep
ends byte-identical to an uninterrupted one.

``<hash>.json`` beside it is a readable copy of the metadata plus the setting's runtime; it is
derived (written after the commit, regenerated with ``runtime_s: null`` if a run was killed
before writing it) and never decides whether a setting is done.

On every run the cache is checked first: missing settings are computed, a result file that cannot
be read (truncated, not a zip, bad metadata) is named on stderr and recomputed, and temporary
files left by killed runs on this host are removed (those of live processes are left alone, so
two runs may share a folder: the second to finish a setting finds it committed and keeps it).
An existing readable result is never replaced unless ``overwrite=True``.  Files get the user's
normal permissions (``0o666`` less the umask).

The hash covers the experiment name, its code ``version`` and every field of the setting (seeds
included), so a changed setting or a bumped experiment version is a cache miss, never a stale hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = [
    "setting_hash",
    "ResultCache",
    "ResultFileError",
    "check_out_dir",
    "run_experiment",
    "load_table",
    "provenance",
]

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


META_KEY = "__meta__"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_STALE_TMP_S = 24 * 3600.0


class ResultFileError(ValueError):
    """A result file exists but cannot be read; the message names the file."""


def check_out_dir(out, *, create_parents: bool = True, flag: str = "--out") -> Path:
    """The results/figures folder ``out`` as a Path, after checking it can be written.

    ``''`` means the current folder.  An existing ``out`` must be a writable folder.  A missing
    one is created later; with ``create_parents=False`` (the command lines) its parent must
    already be a folder, so a typo in a parent's name is an error rather than a new tree.
    Raises ValueError with a one-line message (what was given, what is wrong) before any work.
    """
    if out is None:
        raise ValueError(f"{flag}: no folder given")
    text = str(out)
    path = Path(os.path.expanduser(text)) if text != "" else Path(".")
    shown = f"{flag} {text!r}" + (" (the current folder)" if text == "" else "")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{shown}: {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{shown}: folder {path} is not writable")
        return path
    p = path.parent
    while not p.exists() and p.parent != p:
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ValueError(f"{shown}: {path} lies under {p}, which is a file, not a folder")
    if not create_parents and p != path.parent:
        raise ValueError(f"{shown}: parent folder {path.parent} does not exist")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: cannot create {path}: folder {p} is not writable")
    return path


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def _tmp_name(path: Path) -> Path:
    host = os.uname().nodename.replace(".", "_") if hasattr(os, "uname") else "host"
    return path.parent / f".{path.name}.{host}.{os.getpid()}.{os.urandom(4).hex()}.tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write_fn, *, replace: bool = True, sync_dir: bool = True) -> bool:
    """Write ``path`` atomically: a temporary file in the same folder, fsync, then one rename.

    The temporary file is created with mode 0o666 (the umask applies, as for any file the user
    writes).  ``replace=False`` commits with ``os.link``, which fails if ``path`` exists: the
    function then returns False and leaves the existing file untouched.  Returns True when
    ``path`` now holds the new bytes.
    """
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here: fall back to a checked rename
                if path.exists():
                    return False
                os.replace(tmp, path)
        if sync_dir:  # make the rename itself durable (power loss), not only atomic
            _fsync_dir(path.parent)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _write_npz(f, arrays: dict) -> None:
    """A deterministic ``.npz``: sorted keys, stored (uncompressed), fixed zip timestamps."""
    import zipfile

    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for k in sorted(arrays):
            info = zipfile.ZipInfo(f"{k}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with z.open(info, "w", force_zip64=True) as g:
                np.lib.format.write_array(g, arrays[k], allow_pickle=False)


def _tmp_owner_dead(name: str, host: str) -> bool:
    parts = name.split(".")
    # .<hash>.npz.<host>.<pid>.<rand>.tmp  ->  ['', hash, ext, host, pid, rand, 'tmp']
    if len(parts) < 7 or parts[-4] != host:
        return False
    try:
        pid = int(parts[-3])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


class ResultCache:
    """One ``<hash>.npz`` (arrays + metadata, the commit) and a derived ``<hash>.json`` per
    setting under ``root/experiment``."""

    def __init__(self, root, experiment: str):
        self.dir = Path(root) / experiment
        self.experiment = experiment

    def paths(self, h: str) -> tuple[Path, Path]:
        return self.dir / f"{h}.npz", self.dir / f"{h}.json"

    def has(self, h: str) -> bool:
        """Whether the setting's result file exists (readability: :meth:`problem`)."""
        return self.paths(h)[0].is_file()

    def problem(self, h: str) -> str | None:
        """None if the result is present and readable, else why not ('missing' or the error)."""
        if not self.has(h):
            return "missing"
        try:
            self.load(h)
        except ResultFileError as err:
            return str(err)
        return None

    def clean_tmp(self) -> list[Path]:
        """Remove temporary files of killed writers (dead pid on this host, or older than a day);
        those of live processes are left alone.  Returns the removed paths."""
        if not self.dir.is_dir():
            return []
        host = os.uname().nodename.replace(".", "_") if hasattr(os, "uname") else "host"
        removed = []
        now = time.time()
        for p in self.dir.glob(".*.tmp"):
            try:
                old = now - p.stat().st_mtime > _STALE_TMP_S
            except FileNotFoundError:
                continue
            if old or _tmp_owner_dead(p.name, host):
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
        return removed

    def _meta(self, h: str, setting: dict, meta: dict) -> dict:
        return {
            "hash": h,
            "experiment": self.experiment,
            "id": setting.get("id"),
            "seed": setting.get("seed"),
            "n_seeds": setting.get("n_seeds"),
            "settings": setting,
            **{k: v for k, v in meta.items() if k != "runtime_s"},
            **provenance(),
        }

    def write_sidecar(self, h: str, meta: dict, runtime_s) -> None:
        """The readable ``<hash>.json``: the stored metadata plus the runtime (None if unknown)."""
        side = self.paths(h)[1]
        body = {**meta, "runtime_s": runtime_s}
        data = json.dumps(body, indent=1, sort_keys=True, default=_json_default).encode()
        _atomic_write(side, lambda f: f.write(data), sync_dir=False)  # derived, rebuildable

    def save(self, h: str, setting: dict, arrays: dict, meta: dict, *, overwrite: bool) -> bool:
        """Commit one setting's result.  Returns False (and writes nothing) when, without
        ``overwrite``, another run committed the same setting first; raises FileExistsError if
        the result existed before the call."""
        npz, _side = self.paths(h)
        if not overwrite and npz.exists():
            raise FileExistsError(
                f"result for {setting.get('id', h)} already exists at {npz}; pass overwrite=True "
                "(CLI: --overwrite) to replace it"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        if META_KEY in arrays:
            raise ValueError(f"result array name {META_KEY!r} is reserved for the metadata")
        for k, v in arrays.items():
            if v.dtype == object:
                raise TypeError(f"result array {k!r} has dtype object; use numeric arrays")
        full = self._meta(h, setting, meta)
        blob = json.dumps(full, sort_keys=True, separators=(",", ":"), default=_json_default)
        arrays[META_KEY] = np.frombuffer(blob.encode(), dtype=np.uint8)
        if not _atomic_write(npz, lambda f: _write_npz(f, arrays), replace=overwrite):
            return False
        self.write_sidecar(h, full, meta.get("runtime_s"))
        return True

    def load(self, h: str) -> tuple[dict, dict]:
        """(arrays, metadata) of a stored setting; ResultFileError naming the file if unreadable.

        Files of the earlier two-file format (arrays only, metadata in the ``.json``) still load.
        """
        npz, side = self.paths(h)
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, OSError...
            raise ResultFileError(
                f"result file {npz} is unreadable ({type(err).__name__}: {err})"
            ) from err
        raw = arrays.pop(META_KEY, None)
        try:
            if raw is not None:
                meta = json.loads(raw.tobytes().decode())
                if side.is_file():
                    try:
                        meta["runtime_s"] = json.loads(side.read_text()).get("runtime_s")
                    except (ValueError, OSError):
                        meta["runtime_s"] = None
            else:  # earlier format: the sidecar carries the metadata
                meta = json.loads(side.read_text())
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise ResultFileError(
                f"result file {npz} has unreadable metadata ({type(err).__name__}: {err})"
            ) from err
        if not isinstance(meta, dict) or meta.get("hash", h) != h:
            raise ResultFileError(f"result file {npz} holds metadata of another setting")
        return arrays, meta


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


def _note(msg: str) -> None:
    print(f"[sims] {msg}", file=sys.stderr, flush=True)


def run_experiment(
    experiment,
    *,
    quick: bool = False,
    out=None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Compute every missing or unreadable setting of ``experiment``; return its results table.

    ``experiment`` is a :class:`sims.experiments.Experiment`.  Settings are grouped by the
    experiment's ``batch_key`` and each group runs as one array program; every finished setting
    is committed at once, so an interrupted sweep loses at most the batch in flight.  Which
    settings are computed, and why (missing, or which file is unreadable), goes to stderr.
    """
    out = check_out_dir(out if out is not None else DEFAULT_RESULTS)
    cache = ResultCache(out, experiment.name)
    settings = experiment.settings(quick)
    ids = [s["id"] for s in settings]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"experiment {experiment.name}: duplicate setting ids {dup[:5]}")
    hashes = [setting_hash(experiment.name, experiment.version, s) for s in settings]
    cache.dir.mkdir(parents=True, exist_ok=True)
    cache.clean_tmp()
    todo, missing, broken = [], [], set()
    for h, s in zip(hashes, settings, strict=True):
        if overwrite:
            todo.append((h, s))
            continue
        why = cache.problem(h)
        if why is None:
            if not cache.paths(h)[1].is_file():  # killed between commit and sidecar
                cache.write_sidecar(h, cache.load(h)[1], None)
            continue
        todo.append((h, s))
        if why == "missing":
            missing.append(s["id"])
        else:
            broken.add(h)
            _note(f"{experiment.name}: recomputing {s['id']}: {why}")
    if missing and len(missing) < len(settings):
        _note(
            f"{experiment.name}: {len(missing)} of {len(settings)} settings missing in "
            f"{cache.dir}, computing them (first: {missing[0]})"
        )
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
            for (h, s), arrays in zip(group, results, strict=True):
                replace = overwrite or h in broken
                if not replace and cache.has(h):
                    continue  # another run sharing the folder committed it meanwhile
                try:
                    cache.save(
                        h,
                        s,
                        arrays,
                        {"runtime_s": dt, "version": experiment.version},
                        overwrite=replace,
                    )
                except FileExistsError:
                    if replace:  # pragma: no cover - save never raises this when replacing
                        raise
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    return load_table(out, experiment, quick=quick)


def load_table(out, experiment, *, quick: bool = False) -> list[dict]:
    """The results table of the given preset: one row per setting (settings + arrays).

    Raises FileNotFoundError naming the missing settings if the sweep has not finished, and
    :class:`ResultFileError` naming the file if a result cannot be read.
    """
    cache = ResultCache(out, experiment.name)
    rows, missing = [], []
    for s in experiment.settings(quick):
        h = setting_hash(experiment.name, experiment.version, s)
        if not cache.has(h):
            missing.append(s["id"])
            continue
        try:
            arrays, _meta = cache.load(h)
        except ResultFileError as err:
            raise ResultFileError(
                f"{err}; rerun `python -m sims run {experiment.name}"
                f"{' --quick' if quick else ''}` to recompute it"
            ) from err
        rows.append({**s, **arrays, "hash": h})
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} settings of {experiment.name} have no results in {cache.dir} "
            f"(first: {missing[:3]}); run `python -m sims run {experiment.name}"
            f"{' --quick' if quick else ''}`"
        )
    return rows
