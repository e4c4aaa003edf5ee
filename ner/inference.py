"""Forward-pass stage: windows of sub-token ids -> a label and its probability per token.

Meant for an actor pool: the model loads once in ``__init__`` and every call
reuses it. Within a call, all windows of the batch are sorted by length and run
in micro-batches padded only to their longest window, which cuts padding for
corpora of mixed lengths. On CUDA the forward pass runs under bf16 autocast (fp16
where bf16 is unsupported); on CPU it stays in fp32.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from ner import columns as C
from ner.labels import LABEL2ID

_I16_LIST2 = pa.list_(pa.list_(pa.int16()))
_F32_LIST2 = pa.list_(pa.list_(pa.float32()))


class TokenClassifierStage:
    """Adds ``_pred_ids`` (canonical label ids) and ``_pred_scores``, aligned with ``_input_ids``.

    Documents without windows (empty or rejected) pass through with empty lists.
    A micro-batch whose forward pass raises marks its documents ``rejected`` with
    the error as reason, so one bad batch does not fail the job.
    """

    def __init__(
        self,
        model: str,
        micro_batch_size: int = 32,
        device: str = "auto",
        num_threads: int = 0,
    ):
        import torch

        from ner.model import load_classifier, pad_token_id

        if num_threads > 0:
            # Ray pins OMP threads to the actor's CPU share; the forward pass may use more.
            torch.set_num_threads(num_threads)
        self.torch = torch
        loaded = load_classifier(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = loaded.model.to(self.device).eval()
        self.name = loaded.name
        self.fingerprint = loaded.fingerprint
        self.pad_id = pad_token_id(loaded.model)
        self.micro_batch_size = micro_batch_size
        # The model's own label ids -> this project's ids, as one lookup table.
        size = max(loaded.id2label) + 1
        self.to_canonical = np.zeros(size, dtype=np.int16)
        for model_id, label in loaded.id2label.items():
            self.to_canonical[model_id] = LABEL2ID[label]
        self.autocast_dtype = None
        if self.device.type == "cuda":
            self.autocast_dtype = (
                torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            )

    def __call__(self, batch) -> pa.Table:
        table = C.as_table(batch)
        C.require_columns(table, [C.I_INPUT_IDS, C.I_STATUS], "TokenClassifierStage")
        docs = table.column(C.I_INPUT_IDS).to_pylist()
        status = table.column(C.I_STATUS).to_pylist()
        reason = (
            table.column(C.I_REASON).to_pylist()
            if C.I_REASON in table.column_names
            else [""] * len(docs)
        )
        windows = [(d, w) for d, doc in enumerate(docs) for w in range(len(doc))]
        # Longest first: the first micro-batch shows at once whether memory suffices.
        windows.sort(key=lambda dw: -len(docs[dw[0]][dw[1]]))
        pred_ids: list[list] = [[None] * len(doc) for doc in docs]
        pred_scores: list[list] = [[None] * len(doc) for doc in docs]
        for start in range(0, len(windows), self.micro_batch_size):
            chunk = windows[start : start + self.micro_batch_size]
            sequences = [docs[d][w] for d, w in chunk]
            try:
                labels, scores = self._forward(sequences)
            except Exception as err:  # recorded per document, see the class docstring
                for d, _ in chunk:
                    status[d] = C.STATUS_REJECTED
                    reason[d] = f"inference error: {type(err).__name__}: {err}"
                continue
            for row, (d, w) in enumerate(chunk):
                size = len(docs[d][w])
                pred_ids[d][w] = labels[row, :size].tolist()
                pred_scores[d][w] = scores[row, :size].tolist()
        for d in range(len(docs)):
            if status[d] == C.STATUS_REJECTED or any(p is None for p in pred_ids[d]):
                pred_ids[d], pred_scores[d] = [], []
        table = _replace(table, C.I_STATUS, pa.array(status, pa.string()))
        table = _replace(table, C.I_REASON, pa.array(reason, pa.string()))
        table = _replace(table, C.I_PRED_IDS, pa.array(pred_ids, _I16_LIST2))
        return _replace(table, C.I_PRED_SCORES, pa.array(pred_scores, _F32_LIST2))

    def _forward(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest sequence, run the model, return (canonical ids, probabilities)."""
        torch = self.torch
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention[row, : len(sequence)] = 1
        input_ids = input_ids.to(self.device, non_blocking=True)
        attention = attention.to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(device_type="cuda", dtype=self.autocast_dtype):
                    logits = self.model(input_ids=input_ids, attention_mask=attention).logits
            else:
                logits = self.model(input_ids=input_ids, attention_mask=attention).logits
            probabilities = torch.softmax(logits.float(), dim=-1)
            scores, best = probabilities.max(dim=-1)
        return self.to_canonical[best.cpu().numpy()], scores.cpu().numpy().astype(np.float32)


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
