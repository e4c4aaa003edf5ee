"""Data-parallel AdamW through shared memory when every worker runs on one machine.

DDP over gloo moves each gradient through TCP sockets on loopback: per step on a
2-core machine, MiniLM's 11 M synced parameters cost about 64 ms of a 360 ms step,
because the gloo threads copy, send and sum 44 MB while both cores compute. When
all workers share a host (CPU training on one machine), they can share the memory
instead. Everything a step touches lives in ``/dev/shm``:

- the gradients, one row per worker of a ``(world, n)`` float32 array: every
  parameter's ``.grad`` is a view into its worker's row;
- the parameters and AdamW's two moment buffers, one copy for all workers: every
  parameter's ``.data`` is a view into the shared copy, so an update made by one
  worker is seen by all and nothing is copied back.

So the work of an update (average the gradients, sum their squares for clipping,
the AdamW step) is done once, not once per worker, and the workers share it out in
small pieces: each takes the next unclaimed piece until none is left. A worker whose
backward finished early does more of the pieces instead of waiting at a barrier for
the slower one, which on a few shared cores is where lock-step data parallelism
loses most of its time. (DeepSpeed and Intel's extension for PyTorch use a
shared-memory all-reduce for CPU workers on one node for the first reason; ZeRO
shards the optimizer step for the second.) The only messages are three barriers.

The files are unlinked as soon as every worker has mapped them, so a killed worker
leaks nothing: the memory goes when the last mapping does.
"""

from __future__ import annotations

import fcntl
import os
import uuid

import torch
import torch.distributed as dist
from torch.optim.adamw import adamw

SHM_DIR = "/dev/shm"
PIECE = 1 << 19  # floats per piece of work: 2 MB, small enough to balance, big enough to amortise
ROWS_PER_PIECE = 256  # embedding rows per piece of averaging work


class _RowsEmbedding(torch.autograd.Function):
    """An embedding lookup whose backward adds into the used rows of ``grad`` only.

    The stock backward builds a dense vocabulary-by-hidden gradient (47 MB for
    BERT's 30,522 x 384) and autograd then adds it to ``.grad``: 26 ms of one core
    per micro-batch, for the few hundred rows a batch of sentences touches.
    """

    @staticmethod
    def forward(ctx, ids, weight, grad, padding_idx):
        ctx.save_for_backward(ids)
        ctx.grad, ctx.padding_idx = grad, padding_idx
        return torch.nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad_output):
        (ids,) = ctx.saved_tensors
        ids = ids.reshape(-1)
        grad_output = grad_output.reshape(len(ids), -1)
        if ctx.padding_idx is not None:  # the padding row gets no gradient, as in nn.Embedding
            keep = ids != ctx.padding_idx
            ids, grad_output = ids[keep], grad_output[keep]
        ctx.grad.index_add_(0, ids, grad_output)
        return None, None, None, None  # nothing for autograd to accumulate


def _add_rows_in_backward(module: torch.nn.Module, grad: torch.Tensor) -> None:
    """Make ``module`` (an ``nn.Embedding``) add its gradient straight into ``grad``."""
    if not isinstance(module, torch.nn.Embedding) or (
        module.max_norm is not None or module.scale_grad_by_freq or module.sparse
    ):
        return  # an unusual embedding keeps the stock, dense backward

    def forward(ids):
        return _RowsEmbedding.apply(ids, module.weight, grad, module.padding_idx)

    module.forward = forward


class SharedMemoryAdamW:
    """Averages gradients, clips them and runs ``optimizer``'s AdamW step, shared out.

    Build it before the first backward and after restoring ``optimizer`` from a
    checkpoint: it moves the parameters and the optimizer's state into shared
    memory (rank 0's values, so workers start equal as under DDP) and leaves
    ``optimizer.state_dict()`` working for checkpoints. Then, per update: call
    ``observe`` with each micro-batch's ``input_ids``, ``sync`` after the last
    backward (it returns the global gradient norm), and ``step`` in place of
    ``clip_grad_norm_``, ``optimizer.step()`` and ``zero_grad()``. The learning
    rate is read from ``optimizer.param_groups`` at every step, so an LR scheduler
    attached to ``optimizer`` works as usual.

    The word-embedding matrix (half of a small BERT) is averaged only over the
    rows some worker used in the step, as ``EmbeddingRowSync`` does for DDP: the
    other rows are zero on every worker. Every row still gets its AdamW update, as
    it would under DDP, since its moments decay.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank, world):
        self.rank, self.world_size, self.optimizer = rank, world, optimizer
        groups = optimizer.param_groups
        if any(g.get("amsgrad") or g.get("maximize") for g in groups):
            raise ValueError("shared-memory AdamW supports neither amsgrad nor maximize")
        group_of = {id(p): i for i, g in enumerate(groups) for p in g["params"]}
        params = [p for p in model.parameters() if p.requires_grad]
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
            raise ValueError("shared-memory AdamW needs float32 parameters on CPU")
        if any(id(p) not in group_of for p in params):
            raise ValueError("every trainable parameter must be in the optimizer")
        embedding = model.get_input_embeddings().weight
        # A tied output layer writes dense gradients into the embedding: average it whole.
        tied = sum(p is embedding for _, p in model.named_parameters(remove_duplicate=False)) > 1
        self.embedding = None if tied else embedding
        # Embedding first, so its rows are one block; then by optimizer group, so a
        # piece of the AdamW step never spans two learning rates or weight decays.
        params.sort(key=lambda p: (p is not self.embedding, group_of[id(p)]))
        self.numel = n = sum(p.numel() for p in params)
        vocab = embedding.shape[0] if self.embedding is not None else 0
        floats, used, self.control, self._lock_fd = self._map_shared(
            (world + 3) * n, world * vocab, 2 + world
        )
        self.grads = floats[: world * n].view(world, n)
        self.params, self.exp_avg, self.exp_avg_sq = floats[world * n :].view(3, n)
        self.used = used.view(world, vocab)
        self.step_count = self._adopt(params, optimizer)
        self.embedding_numel = self.embedding.numel() if self.embedding is not None else 0
        # Pieces of the AdamW step: (group, start, end), none across a group boundary.
        self.step_pieces, offset = [], 0
        for p in params:
            end = offset + p.numel()
            g = group_of[id(p)]
            last = self.step_pieces[-1] if self.step_pieces else None
            if last and last[0] == g and last[2] == offset and last[2] - last[1] < PIECE:
                self.step_pieces[-1] = (g, last[1], end)
            else:
                self.step_pieces.append((g, offset, end))
            offset = end
        self.step_pieces = [
            (g, s, min(s + PIECE, e))
            for g, start, e in self.step_pieces
            for s in range(start, e, PIECE)
        ]
        self.dense_pieces = [(s, min(s + PIECE, n)) for s in range(self.embedding_numel, n, PIECE)]
        self._claimed = [0, 0]  # pieces of each phase handed out so far, on every worker
        self._rows = torch.empty(0, dtype=torch.long)
        if self.embedding is not None:
            _add_rows_in_backward(model.get_input_embeddings(), self.embedding.grad)

    def _adopt(self, params: list[torch.Tensor], optimizer) -> torch.Tensor:
        """Point parameters, gradients and AdamW state at the shared arrays."""
        step = torch.zeros((), dtype=torch.float32)
        restored = [optimizer.state.get(p, {}) for p in params]
        if any(restored) and not all(restored):
            raise ValueError("optimizer state restored for some parameters only")
        if restored[0]:
            step.fill_(float(restored[0]["step"]))
        offset = 0
        for p, state in zip(params, restored, strict=True):
            views = [a[offset : offset + p.numel()].view_as(p) for a in self._shared_arrays()]
            if self.rank == 0:
                views[0].copy_(p.data)
                if state:
                    views[1].copy_(state["exp_avg"])
                    views[2].copy_(state["exp_avg_sq"])
            p.grad = self.grads[self.rank, offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        dist.barrier()  # rank 0 has filled the shared copy
        offset = 0
        for p in params:
            param, exp_avg, exp_avg_sq = (
                a[offset : offset + p.numel()].view_as(p) for a in self._shared_arrays()
            )
            p.data = param
            # The same step tensor for every parameter: all are stepped together.
            optimizer.state[p] = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
            offset += p.numel()
        return step

    def _shared_arrays(self) -> tuple[torch.Tensor, ...]:
        return self.params, self.exp_avg, self.exp_avg_sq

    def _map_shared(self, floats: int, flags: int, controls: int):
        """Zeroed float32, uint8 and float64 arrays mapped by every worker, and a lock."""
        names = [f"{SHM_DIR}/ner-grads-{uuid.uuid4().hex}" if self.rank == 0 else None]
        dist.broadcast_object_list(names, src=0)
        kinds = ((".f32", floats, torch.float32), (".u8", flags, torch.uint8))
        kinds += ((".f64", controls, torch.float64),)
        if self.rank == 0:
            for suffix, size, dtype in kinds:
                fd = os.open(names[0] + suffix, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                try:  # zero-filled
                    os.ftruncate(fd, max(size, 1) * torch.tensor([], dtype=dtype).element_size())
                finally:
                    os.close(fd)
        dist.barrier()
        arrays = [
            torch.from_file(names[0] + suffix, shared=True, size=max(size, 1), dtype=dtype)[:size]
            for suffix, size, dtype in kinds
        ]
        # An open descriptor outlives the unlinked name: the workers' lock for claiming work.
        lock_fd = os.open(names[0] + ".f64", os.O_RDWR)
        dist.barrier()  # everyone has mapped them: the names are no longer needed
        if self.rank == 0:
            for suffix, _, _ in kinds:
                os.unlink(names[0] + suffix)
        return (*arrays, lock_fd)

    def _pieces(self, phase: int, count: int):
        """Yield indices of this phase's ``count`` pieces that this worker claims."""
        base = self._claimed[phase]
        self._claimed[phase] += count
        while True:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                claimed = int(self.control[phase])
                if claimed < base + count:
                    self.control[phase] = claimed + 1
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if claimed >= base + count:
                return
            yield claimed - base

    def observe(self, input_ids: torch.Tensor) -> None:
        if self.embedding is not None:
            self.used[self.rank, input_ids.reshape(-1)] = 1

    def sync(self) -> float:
        """Average the gradients over workers into rank 0's row; return their global norm."""
        dist.barrier()  # all gradients and used-row flags written
        sums = self.control[2:]
        total = 0.0
        rows = torch.empty(0, dtype=torch.long)
        if self.embedding is not None:
            rows = self.used.amax(dim=0).nonzero().squeeze(1)  # the same on every worker
        self._rows = rows
        row_pieces = [rows[i : i + ROWS_PER_PIECE] for i in range(0, len(rows), ROWS_PER_PIECE)]
        for i in self._pieces(0, len(self.dense_pieces) + len(row_pieces)):
            if i < len(self.dense_pieces):
                start, end = self.dense_pieces[i]
                mean = self._mean(self.grads[:, start:end])
            else:
                grads = self.grads[:, : self.embedding_numel].unflatten(1, self.embedding.shape)
                picked = row_pieces[i - len(self.dense_pieces)]
                # index_select copies: average the copies, then write the mean to row 0.
                mean = self._mean(
                    torch.stack([grads[k].index_select(0, picked) for k in range(self.world_size)])
                )
                grads[0].index_copy_(0, picked, mean)
            total += float(torch.dot(mean.reshape(-1), mean.reshape(-1)))
        sums[self.rank] = total
        dist.barrier()  # every piece averaged, every partial sum written
        return float(sums.sum()) ** 0.5

    def _mean(self, rows: torch.Tensor) -> torch.Tensor:
        """The mean of ``rows`` (one per worker), computed in place in ``rows[0]``."""
        mean = rows[0]
        if self.world_size == 2:
            return mean.lerp_(rows[1], 0.5)  # one pass instead of add, then divide
        for k in range(1, self.world_size):
            mean.add_(rows[k])
        return mean.div_(self.world_size)

    def step(self, max_grad_norm: float, norm: float) -> None:
        """Clip to ``max_grad_norm`` (0: no clipping), step AdamW, zero the gradients."""
        # As clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
        # The fused kernel divides gradients by grad_scale, so nothing is rewritten.
        coefficient = max_grad_norm / (norm + 1e-6) if max_grad_norm > 0 else 1.0
        scale = torch.tensor(1.0 / coefficient) if coefficient < 1.0 else None
        mean = self.grads[0]
        for i in self._pieces(1, len(self.step_pieces)):
            g, start, end = self.step_pieces[i]
            group = self.optimizer.param_groups[g]
            adamw(
                [self.params[start:end]],
                [mean[start:end]],
                [self.exp_avg[start:end]],
                [self.exp_avg_sq[start:end]],
                [],
                [self.step_count.clone()],  # the kernel adds one to its own copy
                fused=True,
                grad_scale=scale,
                amsgrad=False,
                beta1=group["betas"][0],
                beta2=group["betas"][1],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
            )
        self.step_count += 1
        # What optimizer.step() would have recorded, so an LR scheduler does not warn
        # that it stepped first.
        self.optimizer._opt_called = True
        dist.barrier()  # every parameter updated, and rank 0's row no longer read
        self.zero_grad()

    def zero_grad(self) -> None:
        mine = self.grads[self.rank]
        if self.embedding is None:
            mine.zero_()
            return
        # Only the rows averaged last step can be non-zero in the embedding block.
        mine[self.embedding_numel :].zero_()
        mine[: self.embedding_numel].view_as(self.embedding).index_fill_(0, self._rows, 0.0)
        self.used[self.rank].zero_()
