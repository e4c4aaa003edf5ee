#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what benchmarks/gpu_suite.py needs on a lent GPU
# machine that has no network: its image holds torch, transformers, tokenizers,
# pyarrow and pandas, but not Ray, seqeval or datasets. Writes, under .gpu/ (ignored):
#   p1/       the first 56 MiB of Ray's Python 3.12 wheel
#   p2/       the rest of it, the other missing wheels, the model's config and
#             tokenizer (weights are drawn there), and the shared data
# Each device call carries at most 64 MiB, so the wheels travel in two calls. The
# device does not keep a carried path for the next call, so the first call parks its
# part in /tmp (kept while the machine stays warm: issue the second call at once):
#   run(carry=[".gpu/p1"], command="mkdir -p /tmp/gpu && cp .gpu/p1/* /tmp/gpu/")
#   run(carry=[".gpu/p2"], command="bash benchmarks/gpu_run.sh", timeout_s=540)
# gpu_run.sh passes its arguments on: `bash benchmarks/gpu_run.sh --parts train`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo /.gpu/ >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/p1 .gpu/p2/whl .gpu/p2/data
download() {
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$1" "${@:2}"
}
download .gpu/ray ray==2.60.0
# Ray's own needs and those of ray.data/ray.train/seqeval/datasets that the image lacks.
download .gpu/p2/whl jsonschema jsonschema-specifications referencing rpds-py \
  pydantic pydantic-core annotated-types typing-inspection datasets dill \
  multiprocess tensorboardX
# seqeval 1.2.2 is published as a source archive only: build its pure-Python wheel here.
"$PY" -m pip wheel --quiet --no-deps -w .gpu/p2/whl "seqeval==1.2.2"
wheel=$(ls .gpu/ray/*.whl)
split -b 56M "$wheel" ".gpu/p1/$(basename "$wheel")."
mv .gpu/p1/*.ab .gpu/p2/ 2>/dev/null || true
rm -rf .gpu/ray
"$PY" - <<'PY'
from ner.model import EMBEDDED, load_tokenizer, tiny_config
from benchmarks.gpu_suite import BERT_BASE

tiny_config(**BERT_BASE).save_pretrained(".gpu/p2/model")
load_tokenizer(EMBEDDED).save_pretrained(".gpu/p2/model")
PY
cp -r ../shared/data/craft-iob ../shared/data/ontologies ../shared/data/pubmed-sample .gpu/p2/data/
du -sh .gpu/p1 .gpu/p2
