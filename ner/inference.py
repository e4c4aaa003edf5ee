"""Forward-pass stage: windows of sub-token ids -> a label and its probability per token.

Meant for an actor pool: the model loads once in ``__init__`` and every call
reuses it. The windows of a call go from Arrow buffers to flat numpy arrays
(:mod:`ner.packing`), are sorted longest first and packed under a token budget,
gathered into padded host buffers, run, and their predictions scattered back into
flat arrays that become the output columns over the input's own offsets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ner import columns as C
from ner.labels import LABEL2ID, LABELS
from ner.packing import (
    CUDA_SHAPE_MULTIPLES,
    Windows,
    batch_shape,
    fill_batch,
    pack_windows,
    round_up,
    windows_from_arrow,
)


def predict(model, ids, lengths, to_canonical, log_probs: bool = False, ordered: bool = False):
    """(canonical label id, its probability[, all log-probabilities]) per cell of a padded batch.

    ``ids`` (rows x width, int32 to halve the host->device copy) and ``lengths``
    (rows) are device tensors; the attention mask is built there from the lengths.
    Softmax runs in fp32 whatever the weights' dtype: bf16 probabilities near 1
    would round to 1. With ``log_probs`` the third result holds every label's
    log-probability in canonical order (rows x width x labels; -inf for a label
    the model lacks) in fp16, which constrained decoding (:mod:`ner.viterbi`) needs;
    ``ordered`` says the model's label ids already are ours (no reordering).
    """
    import torch

    width = ids.shape[1]
    attention = torch.arange(width, device=ids.device) < lengths[:, None]
    logits = model(input_ids=ids.long(), attention_mask=attention.long()).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    best_logp, best = logp.max(dim=-1)
    labels, scores = to_canonical[best], best_logp.exp()
    if not log_probs:
        return labels, scores
    if ordered:
        return labels, scores, logp.half()
    canonical = torch.full((*logp.shape[:-1], len(LABELS)), -torch.inf, device=logp.device)
    canonical[..., to_canonical.long()] = logp
    return labels, scores, canonical.half()


class TokenClassifierStage:
    """Adds ``_pred_ids`` (canonical label ids) and ``_pred_scores``, aligned with ``_input_ids``.

    Documents without windows (empty or rejected) pass through with empty lists.
    A batch whose forward pass raises marks its documents ``rejected`` with the
    error as reason, so one bad batch does not fail the job.

    Batches hold at most ``token_budget`` padded tokens (rows x longest row), so a
    batch of short windows has many rows and one of long windows few, at about
    the same memory. On CUDA the weights are cast to bf16 (fp16 where bf16 is
    unsupported): no autocast casts per call; on CPU they stay fp32.

    Overlap: one CUDA stream and two alternating slots of pinned host buffers
    keep up to two batches in flight. Batch i+1 is gathered on the host, copied
    (``non_blocking``) and launched before the host waits on batch i's event and
    scatters its results, so the device always has queued work while the host
    prepares and unpacks. Each slot's events guard its buffers: the host
    overwrites a slot's inputs only after their copy to the device completed,
    and reads its outputs only after they landed. No second stream for copies:
    they carry 4 bytes per token in and 3 out (under a megabyte per 65536-token
    batch, tens of microseconds) against milliseconds of forward pass; the host
    work is what needed hiding. Two actors per GPU (``num_gpus_per_actor: 0.5``,
    see configs/annotate_gpu.yaml) are the other way to hide it, at the price of
    a second copy of the model; that is a config choice, not this class's.
    """

    def __init__(
        self,
        model: str,
        token_budget: int = 4096,
        device: str = "auto",
        num_threads: int = 0,
        log_probs: bool = False,
        shape_multiples: tuple[int, int] | None = None,
    ):
        import torch

        from ner.model import load_classifier, pad_token_id

        if token_budget < 1:
            raise ValueError(f"token_budget must be at least 1, got {token_budget}")
        if num_threads > 0:
            # Ray pins OMP threads to the actor's CPU share; the forward pass may use more.
            torch.set_num_threads(num_threads)
        self.torch = torch
        loaded = load_classifier(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.dtype = torch.float32
        if cuda:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = loaded.model.to(device=self.device, dtype=self.dtype).eval()
        self.name = loaded.name
        self.fingerprint = loaded.fingerprint
        self.pad_id = pad_token_id(loaded.model)
        self.token_budget = token_budget
        # Every label's log-probability per token, for constrained decoding: 26 more
        # bytes a token back from the device, so only when the decoder needs them.
        self.log_probs = log_probs
        # What comes back from the device: the smallest types that hold a label id and
        # a probability (fp16: 3 decimal digits, beyond what bf16 weights resolve). On
        # CPU nothing travels, so scores stay fp32.
        self.label_dtype = torch.int8 if len(LABELS) <= 127 else torch.int16
        self.score_dtype = torch.float16 if cuda else torch.float32
        # The model's own label ids -> this project's ids, as one lookup table on the device.
        lookup = np.zeros(max(loaded.id2label) + 1, dtype=np.int64)
        for model_id, label in loaded.id2label.items():
            lookup[model_id] = LABEL2ID[label]
        self.to_canonical = torch.from_numpy(lookup).to(self.device, self.label_dtype)
        # Every model this project trains has our label order: no reordering on the device.
        self.ordered = np.array_equal(lookup, np.arange(len(LABELS)))
        self._pin = cuda  # pinned memory needs CUDA; the CPU path is the same without it
        # (width, rows) multiples of the padded batch shape (see ner.packing.batch_shape):
        # bounded shapes pay on a GPU; on a CPU padding would only cost.
        default = CUDA_SHAPE_MULTIPLES if cuda else (1, 1)
        self.width_multiple, self.row_multiple = shape_multiples or default
        self._event = _cuda_event if cuda else _NoEvent
        self._slots: list[_Slot] = []

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, [C.I_INPUT_IDS, C.I_STATUS], "TokenClassifierStage")
        windows = windows_from_arrow(table.column(C.I_INPUT_IDS))
        rejected = pc.fill_null(pc.equal(table.column(C.I_STATUS), C.STATUS_REJECTED), False)
        rejected = np.asarray(rejected.to_numpy(zero_copy_only=False), dtype=bool)
        # Windows of documents rejected upstream are not run; a zero length leaves them out.
        lengths = np.where(np.repeat(rejected, windows.windows_per_doc), 0, windows.lengths)
        batches = pack_windows(lengths, self.token_budget, self.width_multiple)
        pred_ids = np.zeros(len(windows.tokens), dtype=np.int16)
        pred_scores = np.zeros(len(windows.tokens), dtype=np.float32)
        logp = np.zeros((len(windows.tokens), len(LABELS)), np.float16) if self.log_probs else None
        errors = self._run(windows, batches, pred_ids, pred_scores, logp)
        failed = np.zeros(windows.n_docs, dtype=bool)
        reasons: dict[int, str] = {}
        doc_of_window = windows.doc_of_window() if errors else None
        for batch, err in errors:
            for d in np.unique(doc_of_window[batch]).tolist():
                failed[d] = True
                reasons.setdefault(d, f"inference error: {type(err).__name__}: {err}")
        table = _with_reasons(table, reasons)
        drop = rejected | failed
        table = _replace(table, C.I_PRED_IDS, windows.nested(pred_ids, drop))
        if logp is not None:
            table = _replace(table, C.I_PRED_LOGP, windows.nested(logp, drop))
        return _replace(table, C.I_PRED_SCORES, windows.nested(pred_scores, drop))

    def _run(self, windows: Windows, batches, pred_ids, pred_scores, logp) -> list:
        """Run every batch, two in flight; returns (batch, error) for those that raised."""
        if not batches:
            return []
        self._ensure_slots(round_up(int(windows.lengths[batches[0][0]]), self.width_multiple))
        errors, pending = [], None
        for i, batch in enumerate(batches):
            try:
                flight = self._launch(self._slots[i % 2], windows, batch)
            except Exception as err:  # recorded per document, see the class docstring
                errors.append((batch, err))
                flight = None
            # Only now wait for the previous batch: this one is already queued behind it.
            if pending is not None:
                self._collect(pending, pred_ids, pred_scores, logp, errors)
            pending = flight
        if pending is not None:
            self._collect(pending, pred_ids, pred_scores, logp, errors)
        return errors

    def _ensure_slots(self, longest: int) -> None:
        # Between calls nothing is in flight, so buffers can be replaced safely.
        capacity = max(self.token_budget, longest)
        if self._slots and self._slots[0].capacity >= capacity:
            return
        torch = self.torch
        self._slots = [
            _Slot(
                torch,
                capacity,
                self._pin,
                self.label_dtype,
                self.score_dtype,
                self._event,
                len(LABELS) if self.log_probs else 0,
            )
            for _ in range(2)
        ]

    def _launch(self, slot: _Slot, windows: Windows, batch: np.ndarray) -> _Flight:
        """Gather ``batch`` into ``slot``'s host buffer and queue its copy, forward and copy back."""
        torch = self.torch
        lengths = windows.lengths[batch]
        real = len(batch)  # longest first: row 0 is the widest
        rows, width = batch_shape(
            int(lengths[0]), real, self.token_budget, self.width_multiple, self.row_multiple
        )
        size = rows * width
        slot.copied.synchronize()  # the slot's last inputs have reached the device
        slot.done.synchronize()  # and its last outputs were read (they were; cheap to be sure)
        # One buffer, lengths then ids, so a single host->device copy carries both.
        ids = slot.inputs_np[rows : rows + size].reshape(rows, width)
        positions, mask = fill_batch(
            windows.tokens, windows.starts[batch], lengths, ids, slot.inputs_np[:rows], self.pad_id
        )
        kept = real * width  # only the real rows' results come back
        with torch.inference_mode():
            staged = slot.inputs[: rows + size].to(self.device, non_blocking=True)
            slot.copied.record()
            labels, scores, *logp = self._forward(staged[rows:].view(rows, width), staged[:rows])
            slot.labels[:kept].copy_(labels[:real].reshape(-1), non_blocking=True)
            scores = scores[:real].reshape(-1).to(self.score_dtype)
            slot.scores[:kept].copy_(scores, non_blocking=True)
            if logp:
                slot.logp[:kept].copy_(logp[0][:real].reshape(kept, -1), non_blocking=True)
            slot.done.record()
        return _Flight(slot, batch, positions[mask], mask)

    def _forward(self, ids, lengths):
        """(canonical ids, probabilities) on the device; a seam for the failure tests."""
        return predict(self.model, ids, lengths, self.to_canonical, self.log_probs, self.ordered)

    def _collect(self, flight: _Flight, pred_ids, pred_scores, logp, errors: list) -> None:
        """Wait for ``flight``'s results and scatter them into the flat outputs."""
        try:
            flight.slot.done.synchronize()
        except Exception as err:  # an asynchronous device error surfaces here
            errors.append((flight.batch, err))
            return
        size = flight.mask.size
        mask = flight.mask.reshape(-1)
        pred_ids[flight.targets] = flight.slot.labels_np[:size][mask]
        pred_scores[flight.targets] = flight.slot.scores_np[:size][mask]
        if logp is not None:
            # Rows as opaque 26-byte items: numpy moves each with one copy, not 13.
            row = np.dtype((np.void, logp.itemsize * logp.shape[1]))
            cells = flight.slot.logp_np[:size].view(row).reshape(-1)
            logp.view(row).reshape(-1)[flight.targets] = cells[mask]


class _NoEvent:
    """The CPU stand-in for a CUDA event: CPU work is done when the call returns."""

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


def _cuda_event():
    import torch

    # A blocking event sleeps while it waits instead of spinning a core that the
    # node's tokenize and decode workers can use.
    return torch.cuda.Event(blocking=True)


class _Slot:
    """One of two alternating sets of host buffers, with the events that guard them."""

    def __init__(self, torch, capacity, pin, label_dtype, score_dtype, event, n_labels=0):
        self.capacity = capacity
        # A batch has at most ``capacity`` rows (every window has a token), hence 2x.
        self.inputs = torch.empty(2 * capacity, dtype=torch.int32, pin_memory=pin)
        self.labels = torch.empty(capacity, dtype=label_dtype, pin_memory=pin)
        self.scores = torch.empty(capacity, dtype=score_dtype, pin_memory=pin)
        self.inputs_np = self.inputs.numpy()
        self.labels_np = self.labels.numpy()
        self.scores_np = self.scores.numpy()
        # fp16 log-probabilities: -65504 is the floor, far below any label worth choosing.
        self.logp = torch.empty((capacity, n_labels), dtype=torch.float16, pin_memory=pin)
        self.logp_np = self.logp.numpy()
        self.copied = event()  # recorded after the inputs' copy to the device
        self.done = event()  # recorded after the outputs' copy back


@dataclass
class _Flight:
    """A launched batch: where its results are and where they go."""

    slot: _Slot
    batch: np.ndarray  # window indices
    targets: np.ndarray  # flat token index of every real (unpadded) cell
    mask: np.ndarray  # rows x width: real cells


def _with_reasons(table: pa.Table, reasons: dict[int, str]) -> pa.Table:
    """``_status``/``_reason`` with the documents in ``reasons`` rejected; ``_reason`` always present."""
    if not reasons:
        if C.I_REASON in table.column_names:
            return table
        return table.append_column(C.I_REASON, pa.repeat(pa.scalar("", pa.string()), len(table)))
    # The error path only: Python lists per row are fine here.
    status = table.column(C.I_STATUS).to_pylist()
    reason = (
        table.column(C.I_REASON).to_pylist()
        if C.I_REASON in table.column_names
        else [""] * len(table)
    )
    for d, text in reasons.items():
        status[d], reason[d] = C.STATUS_REJECTED, text
    table = _replace(table, C.I_STATUS, pa.array(status, pa.string()))
    return _replace(table, C.I_REASON, pa.array(reason, pa.string()))


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def default_num_threads() -> int:
    """All cores this process may use: the forward pass is the job's bottleneck."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
