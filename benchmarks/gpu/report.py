"""What a run reports: ratios to the peers measured in the same run, the goals (met / missed /
not measured), the printed summary, the JSON file, and the candidate dispatch table.

The candidate dispatch table is a file in the format of ``kernels/dispatch_table.json``
(:func:`candidate_table`): per measured vocabulary the fastest fused variant (verifier mode,
out of place, public API) whose every check passed; between two measured vocabularies with
different winners the boundary is their geometric mean. It is written only when every fused
variant passed its checks and was timed at every measured vocabulary (a deadline-cut run
would crown the best of whatever ran), and the table in force keeps its choice at a V unless
the winner beats it by more than :data:`NOISE_MARGIN`. Adopting it is copying the file over
``kernels/dispatch_table.json`` (docs/gpu-benchmark.md).
"""

from __future__ import annotations

import json
import math
import os
import sys

#: goals, as ratios against the peers measured in the same run
GOAL_FWD = 1.05  # ours forward / Liger fused_selective_log_softmax
GOAL_FUSED = {32000: 0.70, 151936: 0.80}  # ours fused / Liger triton_grpo_loss
GOAL_EXTRA_MEM = 0.01  # of the logits' bytes
GOAL_LINEAR_TIME = 1.0  # ours hidden-state loss / TRL ChunkedLogProbFunction
GOAL_LINEAR_MEM_OF_LOGITS = 1 / 8  # peak extra memory / bytes of the logits a logits path holds
#: a measured variant replaces the dispatch table's current choice at a vocabulary only when it
#: is faster by more than this fraction (run-to-run noise of a timed case is a few per cent)
NOISE_MARGIN = 0.03

FWD_KINDS = ("fwd", "kernel_fwd", "liger_fwd", "naive_fwd", "compile_fwd")
LINEAR_PEERS = {"liger_linear": "Liger LigerFusedLinearGRPOLoss",
                "trl_chunked": "TRL ChunkedLogProbFunction",
                "cce": "cut-cross-entropy linear_cross_entropy"}  # fmt: skip


# ------------------------------------------------------------------------------ ratios, goals
def _timed(r, ok_only=True):
    return "timing" in r and (r.get("peer") or not ok_only or r.get("status") == "ok")


def fill_ratios(results: dict) -> None:
    """Each timed row's ratio to Liger (same V, same pass, same in-place-ness) and fraction of
    the copy bandwidth measured in this run; each hidden-state row's ratio to every peer at
    its H. Smoke results (not measurements) get none."""
    if results.get("meta", {}).get("smoke"):
        return
    by: dict = {}
    for r in results["cases"]:
        if _timed(r):
            key = (r["kind"], r.get("V"), r.get("H"), bool(r.get("inplace")), r.get("mode"))
            by.setdefault(key, r["timing"])
    for r in results["cases"]:
        t = r.get("timing")
        if not t or r["kind"] == "copy":
            continue
        V, H, ip = r.get("V"), r.get("H"), bool(r.get("inplace"))
        if H is not None:
            for k in LINEAR_PEERS:
                p = by.get((k, V, H, False, "verifier"))
                if p and k != r["kind"]:
                    t[f"ratio_to_{k}"] = t["ms"] / p["ms"]
            continue
        lig = by.get(("liger_fwd" if r["kind"] in FWD_KINDS else "liger_grpo", V, None,
                      False if r["kind"] in FWD_KINDS else ip, "verifier"))  # fmt: skip
        if lig:
            t["ratio_to_liger"] = t["ms"] / lig["ms"]
        cp = by.get(("copy", V, None, False, "verifier"))
        if cp:
            t["frac_of_copy_bandwidth"] = t["GBps_vs_floor"] / cp["GBps_vs_floor"]


def goal(name, target, value, detail="") -> dict:
    status = "not measured" if value is None else ("met" if value <= target else "missed")
    return {"goal": name, "target": f"<= {target:.4g}", "value": value, "status": status,
            "detail": detail}  # fmt: skip


def _ms(cases, kind, V=None, H=None, inplace=False, variant="any", ok_only=True,
        mode="verifier"):
    out = []
    for r in cases:
        if r["kind"] != kind or r.get("V") != V or r.get("H") != H:
            continue
        if bool(r.get("inplace")) != inplace or r.get("mode", "verifier") != mode:
            continue
        if r.get("upstream", 1.0) != 1.0:
            continue
        if variant != "any" and r.get("variant") != variant:
            continue
        if "timing" not in r or (ok_only and r.get("status") != "ok"):
            continue
        out.append((r["timing"]["ms"], r))
    return out


def goals(results: dict, vocabularies, linear=()) -> list:
    """The goals of the issue, each ``met`` / ``missed`` / ``not measured``; ``vocabularies``
    and ``linear`` ((V, H) pairs): the GPU profile's workloads."""
    cases = results["cases"]
    measured = not results.get("meta", {}).get("smoke")
    out = []
    for V in vocabularies:
        ours, lig = _ms(cases, "fwd", V), _ms(cases, "liger_fwd", V, ok_only=False)
        out.append(goal(f"V={V} forward: ours sequence_logprobs / Liger "
                        "fused_selective_log_softmax", GOAL_FWD,
                        ours[0][0] / lig[0][0] if ours and lig and measured else None))
        best = sorted([m for m in _ms(cases, "fused", V) if m[1].get("variant") is not None],
                      key=lambda m: m[0])  # fmt: skip
        ligs = _ms(cases, "liger_grpo", V, ok_only=False)
        ligs += _ms(cases, "liger_grpo", V, inplace=True, ok_only=False)
        lig_best = min(ligs, key=lambda m: m[0]) if ligs else None
        val, detail = None, ""
        if best and lig_best and measured:
            val = best[0][0] / lig_best[0]
            detail = (f"best variant {best[0][1]['variant']} {best[0][0]:.3f} ms vs Liger "
                      f"(inplace={lig_best[1]['inplace']}) {lig_best[0]:.3f} ms")  # fmt: skip
            dflt = _ms(cases, "fused", V, variant=None)
            if dflt and dflt[0][1].get("variant_dispatched"):
                detail += (f"; default ({dflt[0][1]['variant_dispatched']}) "
                           f"{dflt[0][0] / lig_best[0]:.3f}x")
        out.append(goal(f"V={V} forward+backward: best ours fused (out of place) / Liger "
                        "triton_grpo_loss (its faster mode)", GOAL_FUSED.get(V, 0.8), val,
                        detail))  # fmt: skip
        ip = sorted(_ms(cases, "fused", V, inplace=True), key=lambda m: m[0])
        lip = _ms(cases, "liger_grpo", V, inplace=True, ok_only=False)
        if ip and lip and measured:
            out.append(goal(f"V={V} forward+backward in place: best ours / Liger inplace=True",
                            GOAL_FUSED.get(V, 0.8), ip[0][0] / lip[0][0],
                            f"variant {ip[0][1]['variant']}"))  # fmt: skip
        extras = [(r["timing"].get("peak_extra_frac_of_logits"), r["variant"])
                  for _, r in _ms(cases, "fused", V) if r.get("variant") is not None]
        extras = [e for e in extras if e[0] is not None]
        worst = max(extras, key=lambda e: e[0]) if extras else None
        out.append(goal(f"V={V} peak extra memory of every ours fused variant (fraction of the "
                        "logits)", GOAL_EXTRA_MEM, worst[0] if worst and measured else None,
                        f"worst: {worst[1]}" if worst else ""))  # fmt: skip
    for V, H in linear:
        ours = _ms(cases, "linear", V, H)
        trl = _ms(cases, "trl_chunked", V, H, ok_only=False)
        ok = bool(ours and trl and measured)
        out.append(goal(f"H={H} V={V} forward+backward: ours hidden-state loss / TRL "
                        "ChunkedLogProbFunction", GOAL_LINEAR_TIME,
                        ours[0][0] / trl[0][0] if ok else None))  # fmt: skip
        pk = ours[0][1]["timing"].get("peak_extra_frac_of_logits") if ours else None
        out.append(goal(f"H={H} V={V} peak extra memory of ours hidden-state loss (fraction "
                        "of the logits a logits path holds)", GOAL_LINEAR_MEM_OF_LOGITS,
                        pk if measured else None))  # fmt: skip
        tpk = trl[0][1]["timing"].get("peak_extra_bytes") if trl else None
        opk = ours[0][1]["timing"].get("peak_extra_bytes") if ours else None
        out.append(goal(f"H={H} V={V} peak extra memory: ours / TRL ChunkedLogProbFunction",
                        1.0, opk / tpk if measured and opk is not None and tpk else None))
    return out


# ------------------------------------------------------------------------------ printing
def progress_line(r) -> str:
    s = f"{r['name']}: {r['status'].upper()}"
    if r["status"] == "error":
        return s + f" {r['error']}"
    if r["status"] == "skipped":
        return s + f" ({r.get('why')})"
    bad = [c["check"] for c in r.get("checks", []) if not c["ok"]]
    if r.get("checks"):
        s += f" [{len(r['checks']) - len(bad)}/{len(r['checks'])} checks]"
    if bad:
        s += " FAILED: " + "; ".join(bad)
    t = r.get("timing")
    if t:
        s += f"  {t['ms']:.3f} ms  {t['GBps_vs_floor']:.0f} GB/s vs floor"
        if t.get("TFLOPs") is not None:
            s += f"  {t['TFLOPs']:.0f} TFLOP/s"
        if t.get("peak_extra_bytes") is not None:
            s += f"  extra {t['peak_extra_frac_of_logits']:.4f} of logits"
    return s + f"  ({r.get('wall_s', 0):.1f} s)"


def print_summary(results: dict, goal_rows: list, file=None) -> None:
    file = sys.stdout if file is None else file
    cases = results["cases"]

    def p(*a):
        print(*a, file=file)

    tests = results.get("tests")
    if tests:
        p(f"\n=== kernel tests on this device: {tests.get('summary')} "
          f"(exit {tests.get('returncode')}) ===")
    p("\n=== cases ===")
    counts: dict = {}
    for c in cases:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    p(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for c in cases:
        if c["status"] in ("fail", "error"):
            p(f"  {c['status'].upper():5s} {'(peer) ' if c['peer'] else ''}{c['name']}: "
              + (c.get("error") or "; ".join(x["check"] for x in c["checks"] if not x["ok"])))
    p("\n=== timings (median ms; GB/s against the byte floor; ratio to Liger in this run; "
      "peak extra memory / logits) ===")
    p(f"{'case':62s} {'ms':>9s} {'GB/s':>7s} {'xLiger':>7s} {'extra':>8s} status")
    for c in cases:
        t = c.get("timing")
        if not t:
            continue
        rl = t.get("ratio_to_liger", t.get("ratio_to_liger_linear"))
        ex = t.get("peak_extra_frac_of_logits")
        p(f"{c['name'][:62]:62s} {t['ms']:9.3f} {t['GBps_vs_floor']:7.0f} "
          f"{'-' if rl is None else f'{rl:.3f}':>7s} {'-' if ex is None else f'{ex:.4f}':>8s}"
          f" {c['status']}")  # fmt: skip
    p("\n=== goals (ratios against peers in this run) ===")
    for g in goal_rows:
        v = "-" if g["value"] is None else f"{g['value']:.3f}"
        p(f"  {g['status'].upper():12s} {v:>7s} {g['target']:>7s}  {g['goal']}"
          + (f"  [{g['detail']}]" if g["detail"] else ""))
    d = results.get("dispatch") or {}
    if d.get("candidate_file"):
        p(f"\n=== dispatch: candidate table written to {d['candidate_file']} ===")
        p(f"  rows: {d['rows']}")
    elif d.get("problems"):
        p(f"\n=== dispatch: no candidate table ({len(d['problems'])} missing: "
          + "; ".join(d["problems"][:6]) + ") ===")
    if results["errors"]:
        p(f"\n{len(results['errors'])} errors (see the JSON)")


# ------------------------------------------------------------------------------ JSON
def clean(o):
    """JSON-safe copy: non-finite floats as strings, keys as strings."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    return o


def save_json(path: str, obj) -> None:
    """Write ``obj`` atomically (a run killed mid-write keeps the last complete file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(clean(obj), f, indent=1)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ dispatch
class DispatchNotReady(ValueError):
    """The result file cannot set the dispatch table (``force`` overrides)."""


def _dispatch_rows(results: dict):
    """The rows that compete for the dispatch table: fused cases with a named variant, verifier
    mode, out of place, upstream gradient 1, public API (whatever their status)."""
    for r in results.get("cases", []):
        if (r.get("kind") == "fused" and r.get("variant") is not None and not r.get("inplace")
                and r.get("mode") == "verifier" and r.get("V") is not None
                and r.get("upstream", 1.0) == 1.0):  # fmt: skip
            yield r


def _timed_ok(r) -> bool:
    return r.get("status") == "ok" and "timing" in r and r["timing"].get("ms") is not None


def dispatch_problems(results: dict, variants=None) -> list:
    """Why ``results`` cannot set the dispatch table: one line per vocabulary and variant of
    ``variants`` (default every ``kernels.dispatch.FUSED_VARIANTS``) without a passing, timed
    case (skipped by the deadline, failed, errored, absent). Empty when the run is complete."""
    if variants is None:
        from kernels.dispatch import FUSED_VARIANTS as variants
    rows = list(_dispatch_rows(results))
    Vs = sorted({int(r["V"]) for r in rows})
    if not Vs:
        return ["no fused verifier-mode out-of-place case in the result file"]
    problems = []
    for V in Vs:
        for v in variants:
            mine = [r for r in rows if int(r["V"]) == V and r["variant"] == v]
            if not any(_timed_ok(r) for r in mine):
                why = ", ".join(sorted({str(r.get("status")) for r in mine})) or "absent"
                problems.append(f"V={V} {v}: {why}")
    return problems


def best_variants(results: dict, prefer=None, margin: float = 0.0) -> dict:
    """``{V: (variant, ms, runner_up)}``: per vocabulary, the fastest fused variant (verifier
    mode, out of place, public API) among those whose every check passed and that were timed;
    ``runner_up`` is ``(variant, ms / best ms)`` of the second fastest, or None.

    ``prefer(V)``: the variant currently chosen at V (the table being replaced). It is kept
    unless the fastest is faster by more than ``margin`` (its time ``> best * (1 + margin)``),
    so that run-to-run noise does not flip the table.
    """
    timed: dict = {}
    for r in _dispatch_rows(results):
        if not _timed_ok(r):
            continue
        V, ms = int(r["V"]), float(r["timing"]["ms"])
        cur = timed.setdefault(V, {})
        cur[r["variant"]] = min(ms, cur.get(r["variant"], math.inf))
    best: dict = {}
    for V, by in timed.items():
        order = sorted(by.items(), key=lambda kv: (kv[1], kv[0]))
        win, ms = order[0]
        if prefer is not None:
            p = prefer(V)
            if p in by and p != win and by[p] <= ms * (1 + margin):
                win, ms = p, by[p]
        rest = [(v, t) for v, t in order if v != win]
        best[V] = (win, ms, (rest[0][0], rest[0][1] / ms) if rest else None)
    return best


def dispatch_rows(best: dict) -> tuple:
    """The dispatch rows encoding ``best``: between two measured vocabularies whose best
    variants differ, the boundary is their geometric mean (rounded down), i.e. the nearer
    measurement in log V decides; above the last, its variant."""
    Vs = sorted(best)
    if not Vs:
        raise ValueError("no measured fused variant passed its checks: nothing to dispatch on")
    rows = []
    for lo, hi in zip(Vs, Vs[1:], strict=False):
        if best[lo][0] != best[hi][0]:
            rows.append((int(math.sqrt(lo * hi)), best[lo][0]))
    rows.append((None, best[Vs[-1]][0]))
    merged: list = []
    for r in rows:  # drop rows whose successor names the same variant
        if merged and merged[-1][1] == r[1]:
            merged[-1] = r
        else:
            merged.append(r)
    return tuple(merged)


def provenance(result_name: str, meta: dict, best: dict, forced=()) -> str:
    """The result file, GPU, commit, date, and per V the winner, its time and the runner-up's
    time ratio (how clear the choice was)."""
    per_v = []
    for V, (v, ms, ru) in sorted(best.items()):
        s = f"{V}: {v} {ms:.3f} ms"
        if ru is not None:
            noise = ", within noise" if ru[1] <= 1 + NOISE_MARGIN else ""
            s += f" (runner-up {ru[0]} x{ru[1]:.3f}{noise})"
        per_v.append(s)
    prov = (f"measured: {result_name} ({meta.get('gpu')}, commit {meta.get('commit')}, "
            f"{meta.get('date_utc')}); best per V (kept the previous choice unless beaten by "
            f"> {NOISE_MARGIN:.0%}): " + ", ".join(per_v))  # fmt: skip
    if forced:
        prov += "; FORCED over incomplete results: " + "; ".join(forced)
    return prov


def candidate_table(results: dict, result_name: str, current=None, force: bool = False):
    """The :class:`kernels.dispatch.DispatchTable` that ``results`` measure (``current``: the
    rows in force, default ``kernels.dispatch.TABLE``; kept within :data:`NOISE_MARGIN`).

    Raises ValueError for a ``--smoke`` result (not a measurement) and
    :class:`DispatchNotReady` unless every fused variant passed its checks and was timed at
    every measured vocabulary; ``force`` builds it anyway and says so in the provenance.
    """
    from kernels import dispatch

    meta = results.get("meta", {})
    if meta.get("smoke"):
        raise ValueError(f"{result_name} is a --smoke run (CPU interpreter): not a measurement")
    problems = dispatch_problems(results)
    if problems and not force:
        raise DispatchNotReady(
            f"{result_name} does not measure every fused variant at every vocabulary "
            f"({len(problems)} missing: " + "; ".join(problems) + "); rerun the full benchmark "
            "(or pass --force to build the table from what ran)"
        )
    current = dispatch.TABLE if current is None else current
    best = best_variants(results, prefer=lambda V: dispatch.choose_variant(V, current),
                         margin=NOISE_MARGIN)  # fmt: skip
    return dispatch.DispatchTable(dispatch_rows(best), True,
                                  provenance(result_name, meta, best, problems if force else ()))


def write_candidate(results: dict, result_name: str, out_path: str, force=False) -> dict:
    """Write :func:`candidate_table` to ``out_path`` (the format of
    ``kernels/dispatch_table.json``); returns the ``dispatch`` record of the results."""
    from kernels import dispatch

    table = candidate_table(results, result_name, force=force)
    with open(out_path, "w") as f:
        f.write(dispatch.table_json(table))
    return {"candidate_file": out_path, "rows": [list(r) for r in table.rows],
            "provenance": table.provenance}  # fmt: skip
