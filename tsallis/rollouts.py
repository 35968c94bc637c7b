r"""The trainer-agnostic seam: sampled completions and log-weights in, per-row coefficients out.

Every host that trains with J_Q (the TRL trainer, verl, a plain PyTorch loop, the package's own
experiments) does the same three things between sampling and the loss, and this module does
them once:

1. **Cut each sampled completion into its rationale z** and rebuild the likelihood-mode row
   ``z (+ forced marker) + y*`` (:func:`split_rationale`, :func:`likelihood_row`,
   :func:`likelihood_rows`), under one marker convention (below).
2. **Turn the per-row log-weights into coefficients** (:func:`row_coefficients`): rows are
   grouped by prompt (contiguous groups of M, or one id per row with groups of any sizes), the
   estimator of :mod:`tsallis.estimators` runs on whole groups, and per-row ``coef_z`` /
   ``coef_y`` come back in one documented scale, with one named statistics record
   (:class:`RolloutStats`) that every host logs under the same names.
3. **Check verifier rewards** (:func:`check_rewards`): a reward must lie in [0, 1]; float32
   round-off of a legal reward (a few ulps outside) is clamped, a real violation is an error.

The host then computes the surrogate loss (docs/conventions.md, "Coefficients")

    L = -(1/G) · Σ_b [ coef_z[b]·log π(z_b | x_b) + coef_y[b]·log π(y_b | x_b, z_b) ],

G the number of groups (prompts), e.g. with :func:`tsallis.sequence_loss`,
:func:`kernels.fused_sequence_loss` or the fused hidden-state loss, whose gradient is the
estimator's (Eq. 9, Eq. 12, Algorithm 2).

The marker convention
---------------------
The policy samples a rationale and decides itself when to stop thinking, by sampling the answer
marker (e.g. ``</think>``). The expected update equals -∇J_Q only if the score-function term
log π(z | x) holds *every sampled decision*, that one included, and the weight w(z) is the
probability of the gold answer in exactly the context the policy produced. Hence:

* a **sampled marker** is part of z: its tokens are in the rationale span and take ``coef_z``;
* a sampled **end-of-sequence** token before any marker is also a sampled decision that ended
  z: it stays in z's span (``coef_z``) and in the context, and the marker is then *forced*
  after it (so the answer follows the marker it is always read after);
* the **budget** ran out with neither: z is every sampled token, and the marker is forced;
* a **forced marker** is context in no span: no coefficient, and not part of log w;
* log w = Σ of the gold answer tokens' log-probs only, teacher-forced after z (+ forced marker).

One case cannot follow the rule exactly: a tokenizer may merge the marker with the text after
it into one sampled token (``"#4"`` with marker ``"#"``). That token decided the stop *and*
sampled answer text, so it can be neither kept (the gold answer would follow a sampled partial
answer) nor split. z then ends before it and the marker is forced (``end="merged"``); the stop
decision of such rows is not credited, a small bias that a marker with its own token (a special
token such as ``</think>``) avoids. ``tests/test_rollouts_exact.py`` checks the convention by
exact enumeration: the expected update equals -∇J_Q at q = 0 and the estimator's exact
expectation at every q, while the previous convention (marker scored as part of the answer)
does not.

The coefficient scale
---------------------
``coef_z`` / ``coef_y`` are the estimator's coefficients as :mod:`tsallis.estimators` returns
them, which already average over the M samples of a group (GARL-RLOO: coef_z = c_m/M, Eq. 12),
so the loss above divides by the number of groups G. Hosts whose advantages carry no 1/M (verl:
A_b multiplies a per-sequence mean) use :attr:`RowCoefficients.adv_z` = M_b·coef_z[b].
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import estimators as _est

__all__ = [
    "END_REASONS",
    "REWARD_TOLERANCE",
    "LikelihoodRow",
    "LikelihoodRows",
    "RationaleCut",
    "RolloutStats",
    "RowCoefficients",
    "answer_match_reward",
    "check_rewards",
    "likelihood_row",
    "likelihood_rows",
    "reward_log_w",
    "rollout_stats",
    "row_coefficients",
    "split_rationale",
]

#: why a rationale ended: the policy sampled the marker; it sampled an end-of-sequence token
#: first; the length budget ran out; the marker sat inside a token holding text after it
END_REASONS = ("marker", "eos", "budget", "merged")

#: how far outside [0, 1] a verifier reward may lie and still be read as round-off of a legal
#: one: 4 float32 ulps at 1 (ten rewards of 1 weighted 0.1 sum to 1 + 1 ulp in float32)
REWARD_TOLERANCE = 4 * float(torch.finfo(torch.float32).eps)


# ----------------------------------------------------------------------------- the marker


@dataclass(frozen=True)
class RationaleCut:
    """Where a sampled completion's rationale ends (:func:`split_rationale`).

    Attributes:
        rationale: the sampled tokens of z, in order: through the sampled marker (``end ==
            "marker"``), through the sampled end-of-sequence token (``"eos"``), every token
            (``"budget"``), or the tokens before the one that merged the marker with answer
            text (``"merged"``).
        forced: whether the caller must append the marker (it was not sampled as such).
        end: one of :data:`END_REASONS`.
    """

    rationale: list[int]
    forced: bool
    end: str


def _first_id_match(ids: list[int], marker: list[int], end: int) -> int | None:
    k = len(marker)
    return next((i for i in range(end - k + 1) if ids[i : i + k] == marker), None)


def _shortest_prefix(decode, ids: list[int], end: int, min_len: int) -> int:
    """Smallest n in [1, end] with len(decode(ids[:n])) >= min_len (binary search; decoded
    length grows with n)."""
    lo, hi = 1, end
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= min_len:
            hi = mid
        else:
            lo = mid + 1
    return lo


def split_rationale(
    completion_ids: Sequence[int],
    marker_ids: Sequence[int],
    stop_ids: Sequence[int] | set[int] | frozenset[int] = (),
    *,
    decode: Callable[[list[int]], str] | None = None,
    marker_text: str | None = None,
) -> RationaleCut:
    """Cut a sampled completion at the end of its rationale z (the marker convention above).

    The marker is looked for before the first stop token (generation ends there), first as its
    own token sequence ``marker_ids``. BPE / SentencePiece tokenizers often tokenize it
    differently inside text (``" ####"`` as one token), so with ``decode`` (ids -> text) and
    ``marker_text`` the completion is also searched as text: z runs through the token that
    completes the marker's first occurrence when the marker ends at that token's end (a token
    such as ``" ####"`` also holds rationale text before it: it is kept, it was sampled), and
    ends before the token holding the marker's first character when the marker shares a token
    with text after it (``end="merged"``). An id match is used directly when the text before it
    holds no earlier marker.

    Args:
        completion_ids: the sampled token ids (without padding).
        marker_ids: the marker's token ids (non-empty).
        stop_ids: end-of-sequence ids; the first one ends the completion.
        decode, marker_text: both or neither; the text search described above.

    >>> split_rationale([5, 6, 9, 9, 7], [9, 9])            # sampled marker: part of z
    RationaleCut(rationale=[5, 6, 9, 9], forced=False, end='marker')
    >>> split_rationale([5, 6, 1, 0], [9], stop_ids={1})     # EOS first: kept, marker forced
    RationaleCut(rationale=[5, 6, 1], forced=True, end='eos')
    >>> split_rationale([5, 6, 7], [9])                      # budget ran out
    RationaleCut(rationale=[5, 6, 7], forced=True, end='budget')
    """
    marker = [int(t) for t in marker_ids]
    if not marker:
        raise ValueError("the answer marker must tokenize to at least one token, got none")
    if (decode is None) != (marker_text is None):
        raise ValueError("split_rationale: give both decode and marker_text, or neither")
    if marker_text is not None and (not isinstance(marker_text, str) or not marker_text):
        raise ValueError(f"split_rationale: marker_text must be a non-empty string, got "
                         f"{marker_text!r}")  # fmt: skip
    ids = [int(t) for t in completion_ids]
    stops = frozenset(int(t) for t in stop_ids)
    end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    hit = _first_id_match(ids, marker, end)

    def no_marker() -> RationaleCut:
        if end < len(ids):
            return RationaleCut(ids[: end + 1], True, "eos")
        return RationaleCut(ids, True, "budget")

    if decode is None:
        return RationaleCut(ids[: hit + len(marker)], False, "marker") if hit is not None \
            else no_marker()  # fmt: skip
    if hit is not None and marker_text not in decode(ids[:hit]):
        return RationaleCut(ids[: hit + len(marker)], False, "marker")
    text = decode(ids[:end])
    pos = text.find(marker_text)
    if pos < 0:
        return no_marker()
    stop_at = pos + len(marker_text)
    n = _shortest_prefix(decode, ids, end, stop_at)  # token n - 1 completes the marker
    if len(decode(ids[:n])) == stop_at:
        return RationaleCut(ids[:n], False, "marker")
    first = _shortest_prefix(decode, ids, end, pos + 1)  # token first - 1 starts the marker
    return RationaleCut(ids[: first - 1], True, "merged")


@dataclass(frozen=True)
class LikelihoodRow:
    """One likelihood-mode row: ``ids = rationale + forced marker + gold answer``.

    The spans are contiguous: ``[0, rationale_len)`` is z (sampled: coef_z),
    ``[rationale_len, rationale_len + forced_len)`` the forced marker (context, no span), then
    ``answer_len`` gold-answer tokens (log w, coef_y).
    """

    ids: list[int]
    rationale_len: int
    forced_len: int
    answer_len: int
    end: str

    @property
    def forced(self) -> bool:
        return self.forced_len > 0

    @property
    def answer_start(self) -> int:
        return self.rationale_len + self.forced_len

    @property
    def rationale_mask(self) -> list[int]:
        return [1] * self.rationale_len + [0] * (self.forced_len + self.answer_len)

    @property
    def answer_mask(self) -> list[int]:
        return [0] * self.answer_start + [1] * self.answer_len


def likelihood_row(
    completion_ids: Sequence[int],
    answer_ids: Sequence[int],
    marker_ids: Sequence[int],
    *,
    stop_ids: Sequence[int] | set[int] | frozenset[int] = (),
    decode: Callable[[list[int]], str] | None = None,
    marker_text: str | None = None,
) -> LikelihoodRow:
    """Rebuild a sampled completion as ``z (+ forced marker) + y*`` (:func:`split_rationale`).

    >>> row = likelihood_row([5, 6, 9, 7], answer_ids=[3, 4], marker_ids=[9])
    >>> row.ids, row.rationale_mask, row.answer_mask
    ([5, 6, 9, 3, 4], [1, 1, 1, 0, 0], [0, 0, 0, 1, 1])
    >>> row = likelihood_row([5, 6], answer_ids=[3], marker_ids=[9])  # budget: marker forced
    >>> row.ids, row.rationale_mask, row.answer_mask, row.end
    ([5, 6, 9, 3], [1, 1, 0, 0], [0, 0, 0, 1], 'budget')
    """
    answer = [int(t) for t in answer_ids]
    if not answer:
        raise ValueError(
            "likelihood mode needs the gold answer's tokens (its log-prob is the weight "
            "w = p(y* | x*, z)); got an empty answer"
        )
    cut = split_rationale(completion_ids, marker_ids, stop_ids, decode=decode,
                          marker_text=marker_text)  # fmt: skip
    forced = [int(t) for t in marker_ids] if cut.forced else []
    return LikelihoodRow(
        cut.rationale + forced + answer, len(cut.rationale), len(forced), len(answer), cut.end
    )


@dataclass(frozen=True)
class LikelihoodRows:
    """A batch of :class:`LikelihoodRow` as right-padded tensors ``[B, T]`` (T the longest row).

    ``attention_mask`` is 1 on every real token (the forced marker included), ``rationale_mask``
    and ``answer_mask`` mark the two spans, ``forced [B]`` the rows whose marker was forced.
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    rationale_mask: torch.Tensor
    answer_mask: torch.Tensor
    forced: torch.Tensor
    end: tuple[str, ...]
    rows: tuple[LikelihoodRow, ...]


def likelihood_rows(
    completions: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    marker_ids: Sequence[int],
    *,
    stop_ids: Sequence[int] | set[int] | frozenset[int] = (),
    decode: Callable[[list[int]], str] | None = None,
    marker_text: str | None = None,
    pad_id: int = 0,
) -> LikelihoodRows:
    """:func:`likelihood_row` for a batch (``answers[b]`` is row b's gold answer ids).

    >>> out = likelihood_rows([[5, 9], [5, 6, 7]], [[3], [3]], [9], pad_id=0)
    >>> out.ids.tolist(), out.answer_mask.int().tolist(), out.forced.tolist()
    ([[5, 9, 3, 0, 0], [5, 6, 7, 9, 3]], [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]], [False, True])
    """
    if len(completions) != len(answers):
        raise ValueError(
            f"likelihood_rows: {len(completions)} completions but {len(answers)} answers"
        )
    if not len(completions):
        raise ValueError("likelihood_rows: got an empty batch")
    rows = tuple(
        likelihood_row(c, a, marker_ids, stop_ids=stop_ids, decode=decode,
                       marker_text=marker_text)  # fmt: skip
        for c, a in zip(completions, answers, strict=True)
    )
    B, T = len(rows), max(len(r.ids) for r in rows)
    ids = torch.full((B, T), int(pad_id), dtype=torch.long)
    rationale = torch.zeros((B, T), dtype=torch.bool)
    answer = torch.zeros((B, T), dtype=torch.bool)
    attention = torch.zeros((B, T), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        attention[b, : len(r.ids)] = 1
        rationale[b, : r.rationale_len] = True
        answer[b, r.answer_start : len(r.ids)] = True
    forced = torch.tensor([r.forced for r in rows], dtype=torch.bool)
    return LikelihoodRows(ids, attention, rationale, answer, forced, tuple(r.end for r in rows),
                          rows)  # fmt: skip


# ----------------------------------------------------------------------------- rewards


def check_rewards(rewards, *, tolerance: float = REWARD_TOLERANCE) -> torch.Tensor:
    """Verifier rewards as a float64 tensor in [0, 1].

    GARL's weights are probabilities (Eq. 9), so a reward must lie in [0, 1]. A value at most
    ``tolerance`` outside (float32 round-off of a legal reward: weighted sums, rewards spread
    over tokens) is clamped; NaN or a real violation is a ValueError naming the first bad row.

    >>> check_rewards([0.0, 1.0000001, 0.5])
    tensor([0.0000, 1.0000, 0.5000], dtype=torch.float64)
    """
    if isinstance(rewards, torch.Tensor):
        r = rewards.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    elif isinstance(rewards, (np.ndarray, list, tuple)):
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64)).reshape(-1)
    else:
        raise TypeError(
            f"rewards must be a tensor, numpy array or list, got {type(rewards).__name__}"
        )
    bad = torch.isnan(r) | (r < -tolerance) | (r > 1 + tolerance)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        raise ValueError(
            f"verifier rewards must lie in [0, 1] (GARL's weights are probabilities), got "
            f"{float(r[row])!r} at row {row} ({int(bad.sum())} of {r.numel()} rows outside "
            f"[0, 1] beyond float32 round-off)"
        )
    return r.clamp(0.0, 1.0)


def reward_log_w(rewards) -> torch.Tensor:
    """log w of verifier rewards: ``rewards_to_log_w(check_rewards(rewards))`` (-inf for 0).

    >>> reward_log_w([1.0, 0.0])
    tensor([0., -inf], dtype=torch.float64)
    """
    return _est.rewards_to_log_w(check_rewards(rewards))


def answer_match_reward(answer_marker: str, answer_column: str = "answer"):
    """A reward function (TRL's signature): 1.0 when the text after the first
    ``answer_marker`` of a completion, stripped, equals the gold answer (dataset column
    ``answer_column``), else 0.0. Likelihood mode uses it only as a monitor.

    >>> f = answer_match_reward("=")
    >>> f(completions=["ab=12", "ab=1", "ab"], answer=["12", "12", "12"])
    [1.0, 0.0, 0.0]
    """

    def answer_match(completions, **kwargs):
        answers = kwargs[answer_column]
        out = []
        for c, a in zip(completions, answers, strict=True):
            text = c if isinstance(c, str) else c[-1]["content"]
            _, sep, after = text.partition(answer_marker)
            out.append(float(bool(sep) and after.strip() == str(a).strip()))
        return out

    return answer_match


# ----------------------------------------------------------------------------- coefficients


@dataclass(frozen=True)
class RolloutStats:
    """The statistics every host logs for a batch of groups (``as_metrics`` names them).

    Attributes:
        q: the Tsallis index used.
        estimator: the estimator's registry name.
        mode: "likelihood" or "verifier".
        num_groups: groups (prompts) in the batch.
        frac_stalled: fraction of groups without a positive weight (no signal, coefficients 0).
        log_w_mean: mean over the non-stalled groups of log w̄ (None when every group stalled).
        w_mean: mean over all groups of w̄ (the batch's estimate of P).
        max_amplified_advantage: max over non-stalled groups of max_m M·coef_z/M^q, the paper's
            Fig. 3 monitor (0.0 when every group stalled).
        frac_forced_marker: fraction of rows whose marker was forced (likelihood mode, when
            the host passed ``forced``; else None).
    """

    q: float
    estimator: str
    mode: str
    num_groups: int
    frac_stalled: float
    log_w_mean: float | None
    w_mean: float
    max_amplified_advantage: float
    frac_forced_marker: float | None = None

    def as_metrics(self, prefix: str = "tsallis/") -> dict[str, float]:
        """The numeric fields as ``{prefix + name: value}``, None entries omitted.

        >>> RolloutStats(0.5, "garl_rloo", "verifier", 2, 1.0, None, 0.0, 0.0).as_metrics()
        {'tsallis/q': 0.5, 'tsallis/num_groups': 2.0, 'tsallis/frac_stalled': 1.0, \
'tsallis/w_mean': 0.0, 'tsallis/max_amplified_advantage': 0.0}
        """
        names = ("q", "num_groups", "frac_stalled", "log_w_mean", "w_mean",
                 "max_amplified_advantage", "frac_forced_marker")  # fmt: skip
        return {prefix + n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class RowCoefficients:
    """Per-row coefficients of one batch (:func:`row_coefficients`), all detached, CPU.

    Attributes:
        coef_z: [B] float64, coefficient of log π(z_b | x_b) in the package scale (the loss is
            -(1/G)·Σ_b [coef_z·log π(z) + coef_y·log π(y | z)]).
        coef_y: [B] float64, coefficient of the answer span (== coef_z in verifier mode).
        group_size: [B] int64, M of row b's group.
        group_id: [B] int64, row b's group, numbered in order of first appearance.
        num_groups: G.
        stats: the batch's :class:`RolloutStats`.
        coefficients: the estimator's :class:`~tsallis.estimators.Coefficients`, one per group
            size (ascending), groups in order of first appearance.
    """

    coef_z: torch.Tensor
    coef_y: torch.Tensor
    group_size: torch.Tensor
    group_id: torch.Tensor
    num_groups: int
    stats: RolloutStats
    coefficients: tuple[_est.Coefficients, ...] = field(repr=False)

    @property
    def adv_z(self) -> torch.Tensor:
        """M_b·coef_z[b]: the scale of hosts whose advantages carry no 1/M (verl's)."""
        return self.group_size.to(torch.float64) * self.coef_z

    @property
    def adv_y(self) -> torch.Tensor:
        """M_b·coef_y[b]."""
        return self.group_size.to(torch.float64) * self.coef_y


def _group_rows(B: int, group_size, groups) -> list[tuple[int, torch.Tensor, list]]:
    """[(size M, rows [G_M, M] int64, group labels)] by ascending size; groups in order of
    first appearance, a group's rows in batch order."""
    if (group_size is None) == (groups is None):
        raise ValueError(
            "row_coefficients: pass exactly one of group_size (contiguous groups of M rows) or "
            "groups (one group id per row)"
        )
    if group_size is not None:
        from ._validate import check_group_size

        M = check_group_size(B, group_size)
        rows = torch.arange(B, dtype=torch.int64).reshape(-1, M)
        return [(M, rows, list(range(B // M)))]
    if isinstance(groups, torch.Tensor):
        groups = groups.tolist()
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise TypeError(
            f"groups must be a sequence of {B} hashable group ids (e.g. prompt uids), got "
            f"{type(groups).__name__}"
        )
    if len(groups) != B:
        raise ValueError(
            f"groups must hold one id per row: expected {B} entries, got {len(groups)}"
        )
    members: dict[Hashable, list[int]] = {}
    for row, gid in enumerate(groups):
        try:
            members.setdefault(gid, []).append(row)
        except TypeError:
            raise TypeError(
                f"group ids must be hashable (e.g. strings), got {type(gid).__name__} at row {row}"
            ) from None
    by_size: dict[int, tuple[list[list[int]], list]] = {}
    for gid, rows in members.items():
        bucket = by_size.setdefault(len(rows), ([], []))
        bucket[0].append(rows)
        bucket[1].append(gid)
    return [
        (size, torch.tensor(by_size[size][0], dtype=torch.int64), by_size[size][1])
        for size in sorted(by_size)
    ]


def row_coefficients(
    log_w,
    q,
    *,
    group_size: int | None = None,
    groups: Sequence[Hashable] | None = None,
    estimator: str = "garl_rloo",
    mode: str = "likelihood",
    generator: torch.Generator | None = None,
    forced=None,
    **estimator_options: Any,
) -> RowCoefficients:
    r"""Per-row coefficients of a batch of sampled rows, from their log-weights.

    ``log_w[b]`` is log p(y* | x_b, z_b) (likelihood mode: the teacher-forced gold answer's
    summed log-probs) or log r_b of a verifier reward (:func:`reward_log_w`). Rows are grouped
    by prompt, either contiguously (``group_size=M``: row b in group b // M, TRL's layout) or by
    ``groups`` (one id per row, e.g. verl's uids; rows of a group need not be contiguous, and
    groups of different sizes each use their own M). The estimator (any name of
    :data:`tsallis.ESTIMATORS`: GARL Eq. 9, GARL-RLOO Eq. 12, PAFT Algorithm 2, baselines) runs
    once per group size on whole groups (sizes ascending, groups in order of first appearance,
    so a randomised estimator's draws are a function of the batch and the ``generator``).

    Args:
        log_w: [B] log-weights (any float dtype; computed on in float64, on the CPU).
        q: the Tsallis index in [0, 1].
        group_size, groups: the grouping (exactly one).
        estimator: registry name (default ``"garl_rloo"``, the paper's algorithm).
        mode: ``"likelihood"`` or ``"verifier"``.
        generator: ``torch.Generator`` for randomised estimators (PAFT); required by them.
        forced: optional [B] bools, rows whose marker was forced (only for the statistics).
        **estimator_options: ``paper_normalization``, ``num_draws``, ``eps``, ``threshold``.

    Returns:
        :class:`RowCoefficients` (coef_z, coef_y [B] float64 in the package scale; see the
        module docstring).

    >>> lw = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.2]))
    >>> out = row_coefficients(lw, 1.0, groups=["a", "b", "a", "b"], estimator="garl")
    >>> out.coef_z  # q = 1: posterior weights w_m / Σ_group w (groups a: rows 0, 2; b: 1, 3)
    tensor([0.7143, 0.3333, 0.2857, 0.6667], dtype=torch.float64)
    >>> out.stats.num_groups, out.stats.frac_stalled
    (2, 0.0)
    """
    if not isinstance(log_w, torch.Tensor):
        log_w = torch.as_tensor(np.asarray(log_w, dtype=np.float64))
    if not log_w.is_floating_point() or log_w.ndim != 1:
        raise ValueError(
            f"log_w must be a float tensor of shape [B], got dtype {log_w.dtype} and shape "
            f"{tuple(log_w.shape)}"
        )
    fn = _est.get_estimator(estimator)  # a clear error on a typo
    lw = log_w.detach().to(device="cpu", dtype=torch.float64)
    B = lw.shape[0]
    if B == 0:
        raise ValueError("row_coefficients: got an empty batch (B = 0)")
    options = dict(estimator_options)
    if estimator in _est.RANDOMIZED:
        options["generator"] = generator
    elif generator is not None:
        raise ValueError(f"generator applies to randomised estimators only, not {estimator!r}")
    coef_z = torch.zeros(B, dtype=torch.float64)
    coef_y = torch.zeros(B, dtype=torch.float64)
    sizes = torch.zeros(B, dtype=torch.int64)
    gid = torch.zeros(B, dtype=torch.int64)
    parts: list[_est.Coefficients] = []
    n_groups = 0
    for M, rows, labels in _group_rows(B, group_size, groups):
        try:
            c = fn(lw[rows], q, mode=mode, **options)
        except ValueError as e:
            raise ValueError(
                f"{estimator} on the {rows.shape[0]} group(s) of {M} row(s) (first group "
                f"{labels[0]!r}): {e}"
            ) from e
        flat = rows.reshape(-1)
        coef_z[flat] = c.coef_z.to(torch.float64).reshape(-1)
        coef_y[flat] = c.coef_y.to(torch.float64).reshape(-1)
        sizes[flat] = M
        gid[flat] = (n_groups + torch.arange(rows.shape[0])).repeat_interleave(M)
        n_groups += rows.shape[0]
        parts.append(c)
    stats = rollout_stats(*parts, forced=forced)
    return RowCoefficients(coef_z, coef_y, sizes, gid, n_groups, stats, tuple(parts))


def rollout_stats(*coefficients: _est.Coefficients, forced=None) -> RolloutStats:
    """The :class:`RolloutStats` of one or more estimator outputs of one batch (e.g. the
    ``info.coefficients`` of :func:`tsallis.tsallis_logits_loss`), ``forced`` the rows' forced
    markers if known.

    >>> from tsallis.estimators import garl_rloo
    >>> c = garl_rloo(torch.log(torch.tensor([[0.5, 0.5]])), 0.5)
    >>> rollout_stats(c).w_mean
    0.5
    """
    if not coefficients:
        raise ValueError("rollout_stats needs at least one Coefficients")
    parts = coefficients
    first = parts[0]
    B = sum(c.coef_z.numel() for c in parts)
    n_groups = sum(c.stalled.numel() for c in parts)
    q, estimator, mode = first.q, first.estimator, first.mode
    if isinstance(q, torch.Tensor):
        q = float(q.reshape(-1)[0]) if bool((q == q.reshape(-1)[0]).all()) else float("nan")
    stalled = torch.cat([c.stalled.reshape(-1) for c in parts])
    log_mean = torch.cat([c.log_w_mean.reshape(-1).to(torch.float64) for c in parts])
    max_amp = torch.cat([c.max_amplified_advantage.reshape(-1).to(torch.float64) for c in parts])
    live = ~stalled
    frac_forced = None
    if forced is not None:
        f = torch.as_tensor(forced).reshape(-1)
        if f.numel() != B:
            raise ValueError(f"forced must hold one flag per row: expected {B}, got {f.numel()}")
        frac_forced = float(f.to(torch.float64).mean())
    any_live = bool(live.any())
    return RolloutStats(
        q=float(q),
        estimator=estimator,
        mode=mode,
        num_groups=n_groups,
        frac_stalled=float(stalled.to(torch.float64).mean()),
        log_w_mean=float(log_mean[live].mean()) if any_live else None,
        w_mean=float(torch.exp(log_mean).mean()),
        max_amplified_advantage=float(max_amp[live].max()) if any_live else 0.0,
        frac_forced_marker=frac_forced,
    )

