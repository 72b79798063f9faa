#!/usr/bin/env bash
# Download the wheels that tools/gpu/check.sh installs on the card (the card has no network):
# transformers 4.41.2 (the last Mega, for the benchmark's transformers rows) and the two of its
# dependencies whose versions on the card are too new for it. Into .whl/ (git-ignored; carried
# with `carry: [".whl"]`), for the card's Python 3.12 on x86-64. About 12.5 MiB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-python3}
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    transformers==4.41.2 tokenizers==0.19.1 huggingface-hub==0.23.4
git check-ignore -q .whl || echo "warning: .whl is not git-ignored (add /.whl/ to .gitignore)"
du -sh .whl
