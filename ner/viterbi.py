"""Most probable valid BIO sequence (Viterbi with BIO constraints), over a whole batch.

An argmax per word can produce ``I-X`` where no ``X`` mention is open (after
``O``, after another type, at the start of a text). The transition-constrained
decode picks instead the label sequence with the highest summed log-probability
among the valid ones: ``I-X`` only after ``B-X`` or ``I-X``, never first.

Three facts keep it cheap, with no Python per word:

* Valid transitions cost nothing and invalid ones are impossible, so a sequence
  whose argmax is already valid is its own optimum: only sequences holding an
  invalid step are decoded, the rest keep their argmax untouched.
* The constraint has a shape that makes each step O(labels), not O(labels^2):
  ``O`` and every ``B-X`` may follow anything (so they extend the best previous
  state), ``I-X`` only ``B-X`` or ``I-X`` (the better of two).
* The sequences are decoded side by side: sorted longest first, step ``k``
  updates the first ``n_k`` of them (those longer than ``k``) as one numpy slice,
  so the Python loop runs once per position of the longest sequence, not per word.

Labels are this project's canonical ids (:data:`ner.labels.LABELS`): ``O`` at 0,
then ``B-X`` and ``I-X`` for each type in turn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ner.labels import LABELS

N_LABELS = len(LABELS)
_B = np.arange(1, N_LABELS, 2)  # B-X columns
_I = _B + 1  # I-X columns, in the same type order
_IS_INSIDE = np.zeros(N_LABELS, dtype=bool)
_IS_INSIDE[_I] = True
_TYPE = np.where(np.arange(N_LABELS) == 0, -1, (np.arange(N_LABELS) - 1) // 2)


def invalid_steps(labels: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mask of the positions where ``labels`` is ``I-X`` without an open ``X`` mention.

    ``starts`` marks where a sequence begins (no mention continues into it).
    """
    labels = np.asarray(labels)
    inside = _IS_INSIDE[labels]
    continues = np.zeros(len(labels), dtype=bool)
    if len(labels) > 1:
        continues[1:] = _TYPE[labels[1:]] == _TYPE[labels[:-1]]
    return inside & (starts | ~continues)


def constrain(
    labels: np.ndarray,
    scores: np.ndarray,
    starts: np.ndarray,
    logp_of: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Argmax labels made valid: (labels, scores, mask of the positions changed).

    Each sequence (from one ``starts`` to the next) whose argmax ``labels`` hold
    an invalid step is re-decoded by :func:`bio_viterbi`; ``logp_of(positions)``
    gives those positions' log-probabilities, so the others are never read. A
    changed position's score becomes the probability of its new label.
    """
    bad = invalid_steps(labels, starts)
    if not bad.any():
        return labels, scores, np.zeros(len(labels), dtype=bool)
    sequence = np.cumsum(starts) - 1
    redo = np.zeros(int(sequence[-1]) + 1, dtype=bool)
    redo[sequence[bad]] = True
    index = np.flatnonzero(redo[sequence])
    logp = np.asarray(logp_of(index), dtype=np.float32)
    best = bio_viterbi(logp, starts[index])
    changed = np.zeros(len(labels), dtype=bool)
    changed[index] = best != labels[index]
    labels, scores = labels.copy(), scores.copy()
    labels[index] = best
    scores[index] = np.exp(logp[np.arange(len(index)), best])
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
    """Viterbi over sequences sorted longest first; their labels end to end."""
    longest = int(lengths[0])
    # active[k]: how many sequences are longer than k, a prefix since they are sorted.
    active = np.searchsorted(-lengths, -np.arange(longest), side="left")
    out_offsets = np.cumsum(lengths) - lengths
    delta = logp[first].astype(np.float32)
    delta[:, _I] = -np.inf  # nothing to continue at a sequence's start
    back = [np.zeros((0, N_LABELS), dtype=np.int8)]  # back[k]: (active[k], labels)
    final = np.zeros(len(first), dtype=np.int64)
    for k in range(1, longest):
        m = int(active[k])
        final[m : active[k - 1]] = delta[m:].argmax(axis=1)  # sequences that ended at k - 1
        prev = delta[:m]
        best = prev.argmax(axis=1)
        top = prev[np.arange(m), best]
        step = logp[first[:m] + k].astype(np.float32)
        from_inside = prev[:, _I] > prev[:, _B]
        delta = np.empty_like(prev)
        delta[:, 0] = top + step[:, 0]
        delta[:, _B] = top[:, None] + step[:, _B]
        delta[:, _I] = np.where(from_inside, prev[:, _I], prev[:, _B]) + step[:, _I]
        pointers = np.repeat(best[:, None].astype(np.int8), N_LABELS, axis=1)
        pointers[:, _I] = np.where(from_inside, _I, _B)
        back.append(pointers)
    final[: active[longest - 1]] = delta.argmax(axis=1)
    # Walk back from each sequence's last state; at step k the first active[k] are inside.
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    state = final
    for k in range(longest - 1, -1, -1):
        m = int(active[k])
        out[out_offsets[:m] + k] = state[:m]
        if k > 0:
            state = state.copy()
            state[:m] = back[k][np.arange(m), state[:m]]
    return out
