"""Most probable valid BIO sequence (Viterbi with BIO constraints), over a whole batch.

An argmax per word can produce ``I-X`` where no ``X`` mention is open (after
``O``, after another type, at the start of a text). The transition-constrained
decode picks instead the label sequence with the highest summed log-probability
among the valid ones: ``I-X`` only after ``B-X`` or ``I-X``, never first.

Four facts keep it cheap, with no Python per word:

* Valid transitions cost nothing and invalid ones are impossible, so a sequence
  whose argmax is already valid is its own optimum: it keeps its argmax.
* A confident ``O`` splits the problem exactly (:func:`constrain`). Where the
  argmax is ``O`` by a margin ``gap = lp(O) - max lp(not O)`` at least as large as
  ``need = max_X lp'(I-X) - lp'(B-X)`` of the next word, some optimal path has
  ``O`` there: from any optimal path, setting that word to ``O`` (and the next
  one from ``I-X`` to ``B-X``, which allows the same successors) loses nothing.
  So only the short stretches between such anchors that hold an invalid step
  are decoded, typically a few words around each broken mention.
* The constraint has a shape that makes each step O(labels), not O(labels^2):
  ``O`` and every ``B-X`` may follow anything (so they extend the best previous
  state), ``I-X`` only ``B-X`` or ``I-X`` (the better of two).
* The stretches are decoded side by side: sorted longest first, step ``k``
  updates the first ``n_k`` of them (those longer than ``k``) as one numpy slice,
  so the Python loop runs once per position of the longest stretch, not per word.

Labels are this project's canonical ids (:data:`ner.labels.LABELS`): ``O`` at 0,
then ``B-X`` and ``I-X`` for each type in turn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ner.spans import IS_INSIDE, N_LABELS, TYPE_OF, repair_bio

DECODINGS = ("viterbi", "argmax")  # the decodings the jobs offer; argmax is ner.spans' repair
N_TYPES = (N_LABELS - 1) // 2
_B = np.arange(1, N_LABELS, 2)  # B-X columns
_I = _B + 1  # I-X columns, in the same type order
# The kernel's column order, O, every B-X, then every I-X, so that B and I are slices.
_GROUPED = np.concatenate([[0], _B, _I])


def invalid_steps(labels: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mask of the positions where ``labels`` is ``I-X`` without an open ``X`` mention.

    ``starts`` marks where a sequence begins (no mention continues into it).
    """
    labels = np.asarray(labels)
    return repair_bio(TYPE_OF[labels], IS_INSIDE[labels], np.asarray(starts, dtype=bool))


def constrain(
    labels: np.ndarray,
    scores: np.ndarray,
    starts: np.ndarray,
    logp_of: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Argmax labels made valid: (labels, scores, mask of the positions changed).

    Each sequence (from one ``starts`` to the next) whose argmax ``labels`` hold
    an invalid step is split at its confident ``O`` words (see the module
    docstring) and the stretches holding an invalid step are re-decoded by
    :func:`bio_viterbi`. ``logp_of(positions)`` gives those positions'
    log-probabilities, so the other sequences are never read. A changed
    position's score becomes the probability of its new label.
    """
    bad = invalid_steps(labels, starts)
    if not bad.any():
        return labels, scores, np.zeros(len(labels), dtype=bool)
    sequence = np.cumsum(starts) - 1
    redo = np.zeros(int(sequence[-1]) + 1, dtype=bool)
    redo[sequence[bad]] = True
    index = np.flatnonzero(redo[sequence])
    logp = np.asarray(logp_of(index), dtype=np.float32)
    first = starts[index]
    # Anchors: argmax O with a margin no next I-X could outweigh (the next word of
    # the same sequence; none after a sequence's last word).
    gap = logp[:, 0] - logp[:, 1:].max(axis=1)
    need = np.full(len(index), -np.inf, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # -inf - -inf: a type the model lacks, never needed
        lift = logp[1:, _I] - logp[1:, _B]
    need[:-1] = np.where(np.isnan(lift), -np.inf, lift).max(axis=1)
    need[:-1][first[1:]] = -np.inf
    anchor = (labels[index] == 0) & (gap >= need)
    # Stretches: runs of non-anchor words, each starting after an anchor or a start.
    after_anchor = np.zeros(len(index), dtype=bool)
    after_anchor[1:] = anchor[:-1]
    stretch_start = (first | after_anchor) & ~anchor
    stretch = np.cumsum(stretch_start) - 1
    todo = np.zeros(int(stretch.max(initial=-1)) + 1, dtype=bool)
    todo[stretch[bad[index] & ~anchor]] = True
    keep = np.flatnonzero(~anchor & todo[np.maximum(stretch, 0)])
    best = bio_viterbi(logp[keep], stretch_start[keep])
    where = index[keep]
    changed = np.zeros(len(labels), dtype=bool)
    changed[where] = best != labels[where]
    labels, scores = labels.copy(), scores.copy()
    labels[where] = best
    scores[where] = np.exp(logp[keep, best])
    return labels, scores, changed


def bio_viterbi(logp: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The most probable valid label id at each position.

    ``logp`` is (positions, N_LABELS) log-probabilities in canonical label order,
    the sequences of a batch end to end; ``starts`` marks each sequence's first
    position (the first position always starts one). Among equally probable
    paths the lower label ids win.
    """
    logp = np.asarray(logp)
    n = len(logp)
    if logp.ndim != 2 or logp.shape[1] != N_LABELS:
        raise ValueError(f"logp must be (positions, {N_LABELS}), got {logp.shape}")
    starts = np.asarray(starts, dtype=bool).copy()
    if len(starts) != n:
        raise ValueError(f"{len(starts)} start flags for {n} positions")
    labels = logp.argmax(axis=1)
    if n == 0:
        return labels
    starts[0] = True
    bad = invalid_steps(labels, starts)
    if not bad.any():
        return labels
    first = np.flatnonzero(starts)
    lengths = np.diff(np.append(first, n))
    sequence = np.cumsum(starts) - 1
    todo = np.unique(sequence[bad])
    order = todo[np.argsort(-lengths[todo], kind="stable")]
    labels[_positions(first[order], lengths[order])] = _decode(logp, first[order], lengths[order])
    return labels


def _positions(first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """All positions of the sequences, in the order :func:`_decode` returns their labels."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(first - offsets, lengths) + np.arange(lengths.sum())


def _decode(logp: np.ndarray, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Viterbi over sequences sorted longest first; their labels end to end.

    Columns are regrouped as O, B-*, I-* so that each step's B and I blocks are
    slices: a step is a dozen numpy calls on (sequences still running) x labels.
    """
    t = N_TYPES
    grouped = logp[:, _GROUPED]
    longest = int(lengths[0])
    # active[k]: how many sequences are longer than k, a prefix since they are sorted.
    active = np.searchsorted(-lengths, -np.arange(longest), side="left")
    delta = grouped[first].copy()
    delta[:, 1 + t :] = -np.inf  # nothing to continue at a sequence's start
    from_best = [np.zeros(0, dtype=np.int64)]  # per step: the best previous state (O, B-X)
    from_inside = [np.zeros((0, t), dtype=bool)]  # per step: I-X came from I-X, not B-X
    final = np.zeros(len(first), dtype=np.int64)
    for k in range(1, longest):
        m = int(active[k])
        if m < len(delta):  # sequences that ended at k - 1
            final[m : len(delta)] = delta[m:].argmax(axis=1)
            delta = delta[:m]
        step = grouped[first[:m] + k]
        best = delta.argmax(axis=1)
        top = delta.max(axis=1)
        inside = delta[:, 1 + t :] > delta[:, 1 : 1 + t]
        new = np.empty_like(delta)
        np.add(top[:, None], step[:, : 1 + t], out=new[:, : 1 + t])
        np.maximum(delta[:, 1 + t :], delta[:, 1 : 1 + t], out=new[:, 1 + t :])
        new[:, 1 + t :] += step[:, 1 + t :]
        from_best.append(best)
        from_inside.append(inside)
        delta = new
    final[: len(delta)] = delta.argmax(axis=1)
    # Walk back from each sequence's last state; at step k the first active[k] are inside.
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    out_offsets = np.cumsum(lengths) - lengths
    state = final
    for k in range(longest - 1, -1, -1):
        m = int(active[k])
        out[out_offsets[:m] + k] = state[:m]
        if k > 0:
            current = state[:m]
            is_inside = current > t
            kind = np.where(is_inside, current - 1 - t, 0)
            stay = from_inside[k][np.arange(m), kind]
            previous = np.where(is_inside, np.where(stay, current, current - t), from_best[k])
            state = np.concatenate([previous, state[m:]])
    return _GROUPED[out]
