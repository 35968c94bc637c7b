"""``--out`` / ``--results`` of ``python -m sims run`` and ``python -m paper_figs`` are checked
before any work: status 2 and a one-line message for a file, a folder under a file, a missing
parent folder or an unwritable folder; ``--out ''`` is the current folder, and is reported so."""

from __future__ import annotations

import os

import pytest

import paper_figs.__main__ as figs_cli
import sims.__main__ as sims_cli


def _no_work(*_a, **_k):
    raise AssertionError("work started before --out was checked")


def _bad_outs(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    cases = [
        (f, "is a file"),
        (f / "sub", "which is a file"),
        (tmp_path / "missing" / "res", "does not exist"),
    ]
    if os.geteuid() != 0:  # root writes everywhere: chmod cannot make a folder unwritable
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        cases += [(ro, "not writable"), (ro / "res", "not writable")]
    return cases


def test_sims_run_bad_out_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sims_cli, "run_experiment", _no_work)
    for out, why in _bad_outs(tmp_path):
        assert sims_cli.main(["run", "grpo_q_axis", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and str(out) in err, err


def test_paper_figs_bad_out_or_results_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(figs_cli.importlib, "import_module", _no_work)
    for flag in ("--out", "--results"):
        for out, why in _bad_outs(tmp_path):
            assert figs_cli.main(["escape_time", "--quick", flag, str(out)]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and why in err and flag in err, err


def test_empty_out_is_the_current_folder_and_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert sims_cli.main(["run", "grpo_q_axis", "--quick", "--out", "", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "grpo_q_axis").is_dir()
    assert f"results in {tmp_path / 'grpo_q_axis'}" in err


def test_missing_out_folder_with_existing_parent_is_created(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sims_cli, "run_experiment", lambda *a, **k: calls.append(k) or [])
    assert sims_cli.main(["run", "grpo_q_axis", "--quick", "--out", str(tmp_path / "new")]) == 0
    assert calls and str(calls[0]["out"]) == str(tmp_path / "new")


@pytest.mark.parametrize("bad", ["a_file", "a_file/x"])
def test_runner_api_rejects_a_file_before_any_work(tmp_path, bad):
    from sims.experiments import get_experiment
    from sims.runner import run_experiment

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="file"):
        run_experiment(get_experiment("grpo_q_axis"), quick=True, out=tmp_path / bad)
