"""The probe run on the H200 (2026-11-27), kept as it ran: python .gpu/p2/probe.py.

Scratch GPU probe: where does (b)'s forward time go, and what does (c) spend per stage."""

import json
import os
import sys
import time

sys.path.insert(0, ".")
import torch
from transformers import AutoConfig, AutoModelForTokenClassification

from benchmarks.gpu_suite import (
    GpuBusy,
    bench_bare,
    forward_flops_per_token,
    sample_documents,
    window_ids,
)
from ner.inference import predict

model = ".gpu/p2/model"
out = os.environ.get("OUT", "/tmp/out")
docs = sample_documents()
texts = [d["title"] + " " + d["abstract"] for d in docs]
windows = window_ids(model, texts)
reps = 13
res = {}


def log(k, v):
    res[k] = v
    print(k, v, flush=True)
    with open(f"{out}/probe.json", "w") as f:
        json.dump(res, f, indent=1)


cfg = AutoConfig.from_pretrained(model)
flops = forward_flops_per_token(cfg, 308)
# b as in the suite, twice (second: every shape warmed)
for i in range(2):
    b = bench_bare(model, windows * reps, "cuda", 65536)
    tok = sum(len(w) for w in windows) * reps
    log(f"b_pass{i}", dict(b, tok_s=tok / b["seconds"], mfu=tok / b["seconds"] * flops / 989.4e12))
net = AutoModelForTokenClassification.from_pretrained(model, dtype=torch.bfloat16).cuda().eval()
to_c = torch.arange(13, dtype=torch.int8, device="cuda")


def fixed(rows, width, n, mask=True, fn=None):
    ids = torch.randint(1000, 20000, (rows, width), dtype=torch.int32, device="cuda")
    lengths = torch.full((rows,), width, dtype=torch.int32, device="cuda")
    with torch.inference_mode():
        for _ in range(3):
            (
                fn
                or (
                    lambda: (
                        predict(net, ids, lengths, to_c)
                        if mask
                        else net(input_ids=ids.long()).logits
                    )
                )
            )()
        torch.cuda.synchronize()
        with GpuBusy(0.05) as busy:
            t = time.perf_counter()
            for _ in range(n):
                (
                    fn
                    or (
                        lambda: (
                            predict(net, ids, lengths, to_c)
                            if mask
                            else net(input_ids=ids.long()).logits
                        )
                    )
                )()
            torch.cuda.synchronize()
            s = time.perf_counter() - t
    tok = rows * width * n
    f = forward_flops_per_token(cfg, width)
    return dict(
        s=round(s, 3), tok_s=round(tok / s), mfu=round(tok / s * f / 989.4e12, 4), busy=busy.percent
    )


log("fixed_128x512_mask", fixed(128, 512, 20))
log("fixed_128x512_nomask", fixed(128, 512, 20, mask=False))
log("fixed_256x256_mask", fixed(256, 256, 20))
log("fixed_512x128_mask", fixed(512, 128, 20))
# profile one packed pass: kernel time vs wall
ids = torch.randint(1000, 20000, (128, 512), dtype=torch.int32, device="cuda")
lengths = torch.randint(200, 512, (128,), dtype=torch.int32, device="cuda")
with (
    torch.inference_mode(),
    torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    ) as p,
):
    for _ in range(3):
        predict(net, ids, lengths, to_c)
    torch.cuda.synchronize()
tab = p.key_averages().table(sort_by="cuda_time_total", row_limit=25)
with open(f"{out}/profile.txt", "w") as f:
    f.write(tab)
print(tab[:6000])
try:
    p.export_chrome_trace(f"{out}/trace.json")
except Exception as e:
    print("trace", e)
# compiled, fixed shape
try:
    t = time.perf_counter()
    cnet = torch.compile(net)
    ids2 = torch.randint(1000, 20000, (128, 512), dtype=torch.int64, device="cuda")
    att = torch.ones_like(ids2)

    def fn():
        return cnet(input_ids=ids2, attention_mask=att).logits

    with torch.inference_mode():
        fn()
        torch.cuda.synchronize()
    log("compile_s", round(time.perf_counter() - t, 1))
    log("compiled_128x512", fixed(128, 512, 20, fn=fn))
except Exception as e:
    log("compile_error", repr(e)[:500])
