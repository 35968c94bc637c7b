r"""Cold start in a tiny causal transformer sampling its own rationales (:mod:`sims.transformer`).

Escape = the first step at which the Monte Carlo estimate P̂ (mean of p(y* | x, z) over the
step's sampled prompts and rationales, log space) reaches ``DELTA``; runs that never do are
censored at their budget and kept.  ``DELTA`` lies below the task's format plateau n^(-L) (the
answer alphabet learned, the computation not yet), so an escape means P has grown from p0 by
many decades: leaving the cold start, which is where the q amplification acts (Section 5).

Parts (likelihood mode and GARL-RLOO, Eq. 12, unless said):

* ``sgd`` — SGD at one learning rate for every q (matched effective step size, no 1/M^q): escape
  steps against p0, slope of log T on log(1/p0) against the flow's 1 - q.
* ``verifier`` — the same in verifier mode (exact match of the sampled answer, 0/1 reward).
* ``adam`` — Adam (lr, ε) from p0 down to LLM-like values: which q escape, against the threshold
  q* = 1 - log(ε/s)/log p0, where s is measured per run as the largest gradient component at step
  0 with q = 1 (the score scale; the q-gradient at the start is ≈ p0^(1-q)·s).  The same part
  holds GRPO, PAFT and the SFT→RLVR step schedule (q = 1 for ``SWITCH`` steps, then q = 0), and
  its per-step P̂ and Fig. 3 monitor (max amplified advantage) give the training curves from the
  smallest p0.

Every point record lists each seed's outcome (:func:`seed_outcomes`): its escape step (or
censored), and for the Adam part, which trains on after the escape (``freeze=False``), its
final, peak and lowest post-escape log10 P̂ and whether it *collapsed*: escaped, then at a later
step fell below its own starting p0 or more than ``COLLAPSE_DECADES`` decades below the highest
P̂ it had reached so far.  The SGD and verifier parts freeze a run at its escape, so their
post-escape phase is not observed (``collapsed`` is None).

:func:`answer_split` splits p(y* | x, z) into the answer's format and its content, and
:func:`escape_anatomy` applies it to the Adam runs frozen at their escape step:
``python -m sims.experiments.lm_cold_start [--quick]`` prints it per seed.
"""

from __future__ import annotations

import math

import numpy as np

from tsallis.estimators import RANDOMIZED

from ..analysis import escape_summary, fit_slope, group_rows
from ..transformer import ModelSpec, Task, forward, sample_sequences, train
from . import Experiment
from ._common import Q_GRID, fmt_p, generator_seed, seed_keys

NAME = "lm_cold_start"
# 2: a randomized estimator's setting runs in a batch of its own;
# 3: seeds keyed by (experiment, setting id, seed), not by the cache hash
VERSION = 3
DELTA = 0.05
TASK = {"n": 3, "L": 2, "R": 2}
SPEC = {"d": 16, "heads": 1, "layers": 1, "mlp": 2}
G, M = 2, 8
SGD_LR = 0.3
ADAM_LR = 0.05
SWITCH = 10
MODEL = "transformer_d16_l1"
#: a post-escape fall by more than this many decades from the running peak of log10 P̂ counts as
#: a collapse (as does a fall below the run's own p0): on the format plateau P̂ dips by about two
#: decades from step to step (median lowest post-escape log10 P̂ of the uncollapsed full-preset
#: Adam runs: -3.1); its 159 collapses fell to between -6.0 (p0 = 1e-6) and -51.1
COLLAPSE_DECADES = 10.0


def _grid(quick: bool):
    if quick:
        return {
            "sgd_p0": (5e-3, 1.5e-3),
            "ver_p0": (1.5e-2, 5e-3),
            "adam_p0": (1e-12, 1e-30),
            "eps": (1e-8,),
            "seeds": 2,
            "sgd_budget": 250,
            "ver_budget": 120,
            "adam_budget": 50,
            "paft_q": (0.75, 1.0),
        }
    return {
        "sgd_p0": (1e-2, 3e-3, 1e-3, 3e-4),
        "ver_p0": (3e-2, 1e-2, 3e-3, 1e-3),
        "adam_p0": (1e-6, 1e-12, 1e-20, 1e-30),
        "eps": (1e-6, 1e-8, 1e-10),
        "seeds": 6,
        "sgd_budget": 1200,
        "ver_budget": 600,
        "adam_budget": 200,
        "paft_q": Q_GRID,
    }


def settings(quick: bool) -> list[dict]:
    g = _grid(quick)
    base = {
        "experiment": NAME,
        "model": MODEL,
        "task": dict(TASK),
        "spec": dict(SPEC),
        "G": G,
        "M": M,
        "delta": DELTA,
        "seed": 0,
        "n_seeds": g["seeds"],
        "switch": None,
    }
    out = []
    for part, mode in (("sgd", "likelihood"), ("verifier", "verifier")):
        for q in Q_GRID:
            for p0 in g["sgd_p0" if part == "sgd" else "ver_p0"]:
                out.append(
                    {
                        **base, "part": part, "mode": mode, "estimator": "garl_rloo",
                        "optimizer": "sgd", "adam_eps": None, "lr": SGD_LR, "q": q, "p0": p0,
                        "budget": g["sgd_budget" if part == "sgd" else "ver_budget"],
                        "freeze": True,
                        "id": f"{NAME}/{part}/{mode}/garl_rloo/sgd/q={q:g}/p0={fmt_p(p0)}",
                    }
                )  # fmt: skip
    series = [("garl_rloo", q, None) for q in Q_GRID]
    series += [("garl_rloo", 0.0, SWITCH), ("grpo", None, None)]
    series += [("paft", q, None) for q in g["paft_q"]]
    for eps in g["eps"]:
        for est, q, switch in series:
            if eps != 1e-8 and est != "garl_rloo":
                continue  # the ε sweep is for GARL; the baselines run at the default ε
            for p0 in g["adam_p0"]:
                sched = "" if switch is None else f"/sft{switch}->rlvr"
                qs = "" if q is None else f"/q={q:g}"
                out.append(
                    {
                        **base, "part": "adam", "mode": "likelihood", "estimator": est,
                        "optimizer": "adam", "adam_eps": eps, "lr": ADAM_LR, "q": q,
                        "switch": switch, "p0": p0, "budget": g["adam_budget"], "freeze": False,
                        "id": f"{NAME}/adam/eps={eps:g}/{est}{qs}{sched}/p0={fmt_p(p0)}",
                    }
                )  # fmt: skip
    return out


def batch_key(s: dict) -> tuple:
    """Settings that run in one program. A randomized estimator (PAFT) draws from one generator
    per call, seeded from the batch's settings, so each of its settings is a batch of its own:
    its result then depends on nothing but the setting (a resumed sweep recomputes it to the
    same bits)."""
    own = s["id"] if s["estimator"] in RANDOMIZED else None
    return (s["part"], s["mode"], s["estimator"], s["optimizer"], s["budget"], s["freeze"], own)


def run_batch(batch: list[dict]) -> list[dict]:
    """All seeds of all settings of the batch in one :func:`sims.transformer.train` call."""
    s0 = batch[0]
    keys, p0, q, lr, eps, switch, owner = [], [], [], [], [], [], []
    for j, s in enumerate(batch):
        n = s["n_seeds"]
        keys.append(seed_keys(NAME, s))
        p0 += [s["p0"]] * n
        q += [0.0 if s["q"] is None else s["q"]] * n
        lr += [s["lr"]] * n
        eps += [1e-8 if s["adam_eps"] is None else s["adam_eps"]] * n
        switch += [0 if s["switch"] is None else s["switch"]] * n
        owner += [j] * n
    res = train(
        Task(**s0["task"]),
        ModelSpec(**s0["spec"]),
        np.concatenate(keys),
        np.array(p0),
        np.array(q),
        np.array(lr),
        steps=int(s0["budget"]),
        G=s0["G"],
        M=s0["M"],
        estimator=s0["estimator"],
        mode=s0["mode"],
        optimizer=s0["optimizer"],
        adam_eps=np.array(eps),
        switch=np.array(switch, dtype=np.float64),
        delta=s0["delta"],
        freeze_escaped=s0["freeze"],
        paft_seed=generator_seed(NAME, batch),
    )
    owner = np.array(owner)
    out = []
    for j, s in enumerate(batch):
        rows = owner == j
        r = {
            "steps": res.steps[rows],
            "censored": res.censored[rows],
            "diverged": res.diverged[rows],
            "log_p0": res.log_p0[rows],
            "grad_absmax0": res.grad_absmax0[rows],
        }
        if s["part"] == "adam":
            r["log_p_hat"] = res.log_p_hat[rows]
            r["monitor"] = res.monitor[rows]
        out.append(r)
    return out


def q_star(eps: float, s: float, p0: float) -> float:
    """The Adam threshold q* = 1 - log(ε/s)/log p0: escape predicted for q > q*."""
    return 1.0 - math.log(eps / s) / math.log(p0)


def seed_outcomes(log10_p, log10_p0, steps, censored, decades: float = COLLAPSE_DECADES) -> dict:
    """Per-seed outcome of runs that train on after their escape.

    ``log10_p [n, S+1]``: log10 P̂ at steps 0..S (NaN where not observed, e.g. a run frozen at
    its escape); ``log10_p0 [n]``: each run's measured starting log10 p0; ``steps [n]``: escape
    step T (first step with P̂ ≥ δ) or the budget; ``censored [n]``: never escaped.

    A seed *collapsed* iff it escaped and at some step t > T its log10 P̂_t fell below its own
    log10 p0 or more than ``decades`` below max_{t' ≤ t} log10 P̂_t' (the peak so far): it lost
    the escape again.  Returns arrays ``final`` (log10 P̂ at the last step), ``peak`` (max over
    all steps), ``min_after`` (min over the steps after T; NaN when censored, when T is the last
    step or when those steps are not observed) and ``collapsed`` (bool; False when censored).
    """
    lp = np.asarray(log10_p, dtype=np.float64)
    lp0 = np.asarray(log10_p0, dtype=np.float64)
    t_esc = np.asarray(steps)
    cens = np.asarray(censored)
    if lp.ndim != 2 or lp.shape[1] == 0:
        raise ValueError(f"log10_p must be [n, steps+1] with steps+1 >= 1, got {lp.shape}")
    n, width = lp.shape
    for name, a in (("log10_p0", lp0), ("steps", t_esc), ("censored", cens)):
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
    if cens.dtype != bool:
        raise TypeError(f"censored must be a bool array, got dtype {cens.dtype}")
    if not np.issubdtype(t_esc.dtype, np.integer) or np.any((t_esc < 0) | (t_esc >= width)):
        raise ValueError(f"steps must be integers in [0, {width - 1}], got {t_esc.tolist()}")
    if not (isinstance(decades, (int, float)) and decades > 0):
        raise ValueError(f"decades must be a positive number, got {decades!r}")
    obs = ~np.isnan(lp)  # -inf (P̂ underflowed) is observed: the deepest fall there is
    # the running peak ignores unobserved steps; -inf before the first observed one
    running = np.fmax.accumulate(np.where(obs, lp, -np.inf), axis=1)
    floor = np.maximum(lp0[:, None], running - decades)
    after = (np.arange(width)[None, :] > t_esc[:, None]) & ~cens[:, None] & obs
    fell = after & (lp < floor)
    min_after = np.where(after.any(1), np.min(np.where(after, lp, np.inf), axis=1), np.nan)
    last = np.array([row[~np.isnan(row)][-1] if (~np.isnan(row)).any() else np.nan for row in lp])
    peak = np.where(obs.any(1), running[:, -1], np.nan)
    return {"final": last, "peak": peak, "min_after": min_after, "collapsed": fell.any(1)}


def _num(x) -> float | None:
    """A finite float for JSON, None for NaN (not observed)."""
    return float(x) if np.isfinite(x) else None


def _seed_list(r: dict) -> list[dict]:
    """One dict per seed of a table row: seed, escape step (None when censored), censored,
    diverged, log10 p0, and for rows with a per-step P̂ (the Adam part) final / peak / lowest
    post-escape log10 P̂ and ``collapsed`` (:func:`seed_outcomes`); None where not observed."""
    ln10 = math.log(10.0)
    steps = np.asarray(r["steps"], dtype=np.int64)
    cens = np.asarray(r["censored"], dtype=bool)
    lp0 = np.asarray(r["log_p0"], dtype=np.float64) / ln10
    n = steps.size
    out_c = None
    if "log_p_hat" in r:
        out_c = seed_outcomes(np.asarray(r["log_p_hat"], dtype=np.float64) / ln10, lp0, steps,
                              cens)  # fmt: skip
    seeds = []
    for i in range(n):
        d = {
            "seed": int(r["seed"]) + i,
            "escape_step": None if cens[i] else int(steps[i]),
            "censored": bool(cens[i]),
            "diverged": bool(np.asarray(r["diverged"])[i]),
            "log10_p0": float(lp0[i]),
            "final_log10_P": None, "peak_log10_P": None, "min_log10_P_after_escape": None,
            "collapsed": None,
        }  # fmt: skip
        if out_c is not None:
            d.update(
                final_log10_P=_num(out_c["final"][i]), peak_log10_P=_num(out_c["peak"][i]),
                min_log10_P_after_escape=_num(out_c["min_after"][i]),
                collapsed=bool(out_c["collapsed"][i]),
            )  # fmt: skip
        seeds.append(d)
    return seeds


def _label(r) -> str:
    if r["switch"] is not None:
        return f"sft{r['switch']}->rlvr"
    return r["estimator"] if r["q"] is None else f"{r['estimator']} q={r['q']:g}"


def analyze(table: list[dict]) -> list[dict]:
    """One record per (series, p0) point with the escape summary and ``seeds``, every seed's
    outcome (:func:`_seed_list`; ``n_collapsed`` counts the collapsed ones, None where the
    post-escape phase is not observed); SGD series carry their slope fit, Adam points the
    threshold prediction; plus one ``curve`` record per Adam series at the smallest p0 (median
    and every seed's log10 P̂ per step, the seeds' escape steps and ``collapsed`` flags,
    median monitor)."""
    records = []
    # s per (part, eps, p0): median over the q = 1 GARL runs of the step-0 gradient scale
    s_hat = {}
    for r in table:
        if r["part"] == "adam" and r["estimator"] == "garl_rloo" and r["q"] == 1.0:
            if r["switch"] is None:
                s_hat[(r["adam_eps"], r["p0"])] = float(np.median(r["grad_absmax0"]))
    keys = ["part", "mode", "estimator", "optimizer", "adam_eps", "q", "switch"]
    for key, rows in group_rows(table, keys).items():
        part = key[0]
        rows = sorted(rows, key=lambda r: -r["p0"])
        p0m = np.array([float(np.exp(np.median(r["log_p0"]))) for r in rows])
        summ = [escape_summary(r["steps"], r["censored"]) for r in rows]
        fit = None
        if part in ("sgd", "verifier"):
            fit = fit_slope(p0m, [r["steps"] for r in rows], [r["censored"] for r in rows])
        for r, p, sm in zip(rows, p0m, summ, strict=True):
            rec = {
                "experiment": NAME,
                "part": part,
                "model": r["model"],
                "mode": r["mode"],
                "estimator": r["estimator"],
                "optimizer": r["optimizer"],
                "adam_eps": r["adam_eps"],
                "lr": r["lr"],
                "q": r["q"],
                "schedule": None if r["switch"] is None else f"q=1 for {r['switch']} steps, then q",
                "label": _label(r),
                "p0": float(p),
                "p0_target": r["p0"],
                "M": r["M"],
                "G": r["G"],
                "delta": r["delta"],
                "budget": int(r["budget"]),
                "median_steps": sm["median"],
                "median_censored": sm["median_censored"],
                "n_runs": sm["n"],
                "n_censored": sm["n_censored"],
                "n_diverged": int(np.sum(r["diverged"])),
                "steps": [int(x) for x in r["steps"]],
                "grad_scale_step0": float(np.median(r["grad_absmax0"])),
                "seeds": _seed_list(r),
            }
            obs = [d["collapsed"] for d in rec["seeds"] if d["collapsed"] is not None]
            # None when the post-escape phase is not observed (runs frozen at the escape)
            rec["n_collapsed"] = int(sum(obs)) if obs else None
            if fit is not None:
                rec.update(
                    slope=fit["slope"], slope_ci=fit["slope_ci"], flow_slope=1.0 - r["q"],
                    slope_points=fit["n_points"],
                )  # fmt: skip
            if part == "adam":
                s = s_hat.get((r["adam_eps"], r["p0"]))
                qs = math.nan if s is None else q_star(r["adam_eps"], s, float(p))
                rec.update(s_hat=s, q_star=qs)
                if r["q"] is not None and r["switch"] is None and np.isfinite(qs):
                    rec["predicted_escape"] = bool(r["q"] > qs)
                rec["escaped"] = not sm["median_censored"]
            records.append(rec)
        if part == "adam":
            r = rows[-1]  # the smallest p0
            lp = np.asarray(r["log_p_hat"], dtype=np.float64) / math.log(10.0)
            mon = np.asarray(r["monitor"], dtype=np.float64)
            records.append(
                {
                    "experiment": NAME, "part": "curve", "model": r["model"], "mode": r["mode"],
                    "estimator": r["estimator"], "optimizer": "adam", "adam_eps": r["adam_eps"],
                    "q": r["q"], "label": _label(r), "p0": float(p0m[-1]), "M": r["M"],
                    "schedule": None if r["switch"] is None else f"q=1 for {r['switch']} steps",
                    "median_steps": summ[-1]["median"], "n_runs": summ[-1]["n"],
                    "n_censored": summ[-1]["n_censored"],
                    "n_collapsed": records[-1]["n_collapsed"],
                    "collapsed": [d["collapsed"] for d in records[-1]["seeds"]],
                    "escape_steps": [d["escape_step"] for d in records[-1]["seeds"]],
                    "curve": {
                        "step": list(range(lp.shape[1])),
                        "log10_P": [float(x) for x in np.nanmedian(lp, axis=0)],
                        # every seed's curve, so that a collapse is not hidden by the median
                        "log10_P_seeds": [[_num(x) for x in row] for row in lp],
                        "monitor": [
                            None if not np.isfinite(x) else float(x)
                            for x in _nanmedian_cols(mon)
                        ],
                    },
                }
            )  # fmt: skip
    return records


def answer_split(params: dict, task: Task, spec: ModelSpec, keys, *,
                 samples_per_prompt: int = 64) -> dict:
    """Split p(y* | x, z) = format · content for every member, over all n² prompts with
    ``samples_per_prompt`` sampled rationales each (the sampling of :func:`estimate_p`).

    At each answer position l (gold prefix teacher-forced) the model puts mass A_l on the answer
    alphabet and p_l on the gold digit: format = Π_l A_l, content = Π_l p_l/A_l, so that
    format · content = p(y* | x, z) exactly.  Content at chance is n^-L (1/9 for n = 3, L = 2).
    Returned per member, means over the samples: ``format``, ``content``, ``log10_P``
    (log10 of the mean of their product), ``p_answer_first`` (probability of an answer-alphabet
    token at the first rationale position) and ``forced`` (fraction of rationales whose marker
    was forced at the budget R).
    """
    if not (isinstance(samples_per_prompt, int) and samples_per_prompt >= 1):
        raise ValueError(f"samples_per_prompt must be a positive int, got {samples_per_prompt!r}")
    import torch

    keys_t = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    E = keys_t.shape[0]
    prompts = torch.arange(task.n_prompts).repeat(E, 1)
    b = sample_sequences(
        params, task, spec, keys_t ^ 0x5EED, 0, task.n_prompts, samples_per_prompt,
        verifier=False, prompts=prompts,
    )  # fmt: skip
    with torch.no_grad():
        pr = torch.softmax(forward(params, b.gold_ids, spec)[:, :, :-1].double(), -1)
    ans = b.ans_mask[:, :, 1:]  # position t predicts token t + 1
    alph = pr[..., task.n + 1 :].sum(-1)
    gold = torch.gather(pr, -1, b.gold_ids[:, :, 1:, None]).squeeze(-1)
    one = torch.ones_like(alph)
    fmt = torch.where(ans, alph, one).prod(-1)
    cont = torch.where(ans, gold / alph, one).prod(-1)
    return {
        "format": fmt.mean(1).numpy(),
        "content": cont.mean(1).numpy(),
        "log10_P": np.log10((fmt * cont).mean(1).numpy()),
        "p_answer_first": pr[:, :, 1, task.n + 1 :].sum(-1).mean(1).numpy(),
        "forced": b.forced.double().mean(1).numpy(),
    }


def escape_anatomy(quick: bool = False, *, eps: float = 1e-8, qs=(0.75, 1.0)) -> list[dict]:
    """Re-run the Adam GARL-RLOO settings (ε = ``eps``, q in ``qs``, every p0 of the preset)
    with each run frozen at its escape step, and give :func:`answer_split` of the model there:
    one dict per seed.  Freezing changes nothing before the escape, so the escape steps are the
    records' (the sweep itself trains on after the escape)."""
    out = []
    for s in settings(quick):
        if not (s["part"] == "adam" and s["estimator"] == "garl_rloo" and s["switch"] is None
                and s["adam_eps"] == eps and s["q"] in qs):  # fmt: skip
            continue
        keys = seed_keys(NAME, s)
        E = keys.size
        task, spec = Task(**s["task"]), ModelSpec(**s["spec"])
        res = train(
            task, spec, keys, np.full(E, s["p0"]), np.full(E, s["q"]), np.full(E, s["lr"]),
            steps=int(s["budget"]), G=s["G"], M=s["M"], estimator="garl_rloo",
            mode="likelihood", optimizer="adam", adam_eps=np.full(E, eps), switch=np.zeros(E),
            delta=s["delta"], freeze_escaped=True,
        )  # fmt: skip
        split = answer_split(res.params, task, spec, keys)
        for i in range(E):
            out.append(
                {
                    "q": s["q"], "p0": s["p0"], "adam_eps": eps, "seed": s["seed"] + i,
                    "escape_step": None if res.censored[i] else int(res.steps[i]),
                    **{k: float(v[i]) for k, v in split.items()},
                }
            )  # fmt: skip
    return out


def _nanmedian_cols(a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        col = a[:, j][np.isfinite(a[:, j])]
        if col.size:
            out[j] = float(np.median(col))
    return out


EXPERIMENT = Experiment(
    name=NAME,
    description="cold start in a tiny causal transformer sampling its own rationales: escape "
    "vs p0 per q under SGD (slopes vs 1-q) and Adam (the ε threshold), verifier vs likelihood, "
    "GRPO/PAFT/SFT->RLVR, training curves of P and the max amplified advantage",
    version=VERSION,
    settings=settings,
    batch_key=batch_key,
    run_batch=run_batch,
    analyze=analyze,
)


if __name__ == "__main__":  # python -m sims.experiments.lm_cold_start [--quick]
    import sys

    print("q     p0      seed  escape  log10 P  format  content  p(answer@z1)  forced")
    for d in escape_anatomy("--quick" in sys.argv[1:]):
        t = "cens" if d["escape_step"] is None else d["escape_step"]
        print(f"{d['q']:<5g} {d['p0']:<7.0e} {d['seed']:<5d} {t!s:<7} {d['log10_P']:7.2f}  "
              f"{d['format']:6.3f}  {d['content']:7.4f}  {d['p_answer_first']:12.3f}  "
              f"{d['forced']:6.2f}")  # fmt: skip
