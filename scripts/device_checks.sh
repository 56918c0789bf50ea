#!/usr/bin/env bash
# The CUDA measurements that issues 13-15 ask for, as one prepared run that fits one device call
# (at most 9 min 10 s; the tool allows 10 min per command), so a session that is lent a GPU spends its
# device time measuring, not preparing:
#
#   1. PINN step (issue 15), DeepXDE's Burgers setting: eager fp32 / mixed / bf16_mixed with the
#      compiled fp32 row (inductor's C++ wrapper, and the Python one beside it) and the bare
#      loops; every precision compiled (compile=true); every
#      precision compiled with CUDA graphs (compile_mode=reduce-overhead); Navier-Stokes
#      (Kovasznay, the recipe's network) eager vs compiled, and the Taylor step with the
#      Laplacian's terms apart (the step before the summed stream) (scripts/benchmark.py);
#   2. FNO (issue 13): Tu et al.'s settings on Darcy: time, throughput and the CUDA allocator's
#      peak of fp32 / AMP / half spectral / AMP + half + tanh (scripts/benchmark.py model=fno);
#   3. DiffNet (issue 14): one process at 1024x1024 (the GPU config of the scaling table) and the
#      fp32 / bf16_mixed / mixed step at 256x256 (scripts/bench_distributed.py --device cuda).
#
# Usage: bash scripts/device_checks.sh [OUT_DIR]     (default outputs/device_checks)
#        DEVICE_CHECKS_DRY=1 bash scripts/device_checks.sh /tmp/dry   # the same commands on the
#                                                     # CPU at toy sizes: checks the script itself
# Each measurement runs under its own time limit and writes its JSON and log into OUT_DIR; one
# that fails or runs out of time is recorded in OUT_DIR/status.txt and the next one still runs.
#
# On the device machine (python3 there has torch, Lightning, scipy, matplotlib, opt-einsum; not
# Hydra): carry Hydra's wheels and put them and src/ on the path (checked here in a venv holding
# only torch, pytorch-lightning, scipy, matplotlib, opt-einsum, rich, pyyaml and these). Once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       hydra-core==1.3.2 omegaconf==2.3.0
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3  # PyPI has no wheel
# and the device command (carry: [".whl"]; the tool returns at most 8 files, so one archive):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#   PYTHONPATH=/tmp/site:src bash scripts/device_checks.sh /tmp/dc; tar czf $OUT/dc.tgz -C /tmp/dc .
set -u

out=${1:-outputs/device_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

if [[ ${DEVICE_CHECKS_DRY:-0} == 1 ]]; then
    trainer=trainer=cpu device=cpu scale=10
    steps=(--steps 4 --warmup 3 --turn 2)
    points=(problem.n_domain=256 problem.n_boundary=16 problem.n_initial=16)
    grid=(--grid 32 --batch-per-process 1 --steps 2 --warmup 1 --repeats 1 --precision-grid 16
          --precision-steps 2 --precision-warmup 1)
else
    trainer=trainer=gpu device=cuda scale=1
    steps=()
    points=()
    grid=(--grid 1024 --batch-per-process 4 --steps 10 --repeats 1 --precision-grid 256)
fi

status=0
measure() {  # name, time limit in s (x scale), then the command's arguments
    local name=$1 seconds=$(($2 * scale))
    shift 2
    echo "== $name (at most ${seconds} s)"
    timeout "$seconds" "$py" "$@" >"$out/$name.log" 2>&1
    local code=$?
    echo "$name: exit $code" | tee -a "$out/status.txt"
    ((code == 0)) || status=1
}

{
    "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

three=(--precisions fp32 mixed bf16_mixed)
burgers=(scripts/benchmark.py --deepxde-setting "${three[@]}" "${steps[@]}" "$trainer" "${points[@]}")
# the compiled fp32 row and the bare compiled loops with inductor's C++ wrapper (auto keeps it
# off on CUDA), and the compiled row with the Python wrapper beside it (--python-wrapper)
measure burgers_eager_vs_compiled 120 "${burgers[@]}" --compile --python-wrapper \
    compile_cpp_wrapper=true --out "$out/burgers_eager_vs_compiled.json"
measure burgers_compiled 70 "${burgers[@]}" compile=true --out "$out/burgers_compiled.json"
measure burgers_cuda_graphs 70 "${burgers[@]}" compile=true compile_mode=reduce-overhead \
    --out "$out/burgers_cuda_graphs.json"
measure navier_stokes 110 scripts/benchmark.py problem=navier_stokes --compile --laplacian-apart \
    "${three[@]}" "${steps[@]}" "$trainer" --out "$out/navier_stokes.json"
measure fno_darcy 80 scripts/benchmark.py problem=darcy model=fno --no-reference "${steps[@]}" \
    "$trainer" --out "$out/fno_darcy.json"
measure diffnet 100 scripts/bench_distributed.py --parts scaling precision --device "$device" \
    --processes 1 "${grid[@]}" --out "$out/diffnet.json"
exit "$status"
