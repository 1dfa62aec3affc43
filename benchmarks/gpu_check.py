"""Every GPU check of neurosal in one run: the ``cuda`` tests, the GPU benchmarks, and
``sanet-resnet20`` trained on CIFAR-10 for as many epochs as fit in a time budget.

    python benchmarks/gpu_check.py --cifar DIR [--accelerator cuda] [--budget-s 600]

``DIR`` holds CIFAR-10's python batches (``data_batch_*``, ``test_batch``; build them with the
shared ``make_cifar10.py``). Each part's output goes to stdout and, as JSON lines, to
``--out`` (default ``gpu_check.jsonl``). ``--accelerator cpu --quick`` runs the same script
small on a CPU (how it is tested before it goes to a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list, timeout: float, log) -> dict:
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    rec = {"cmd": " ".join(map(str, cmd)), "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
           "output": out[-6000:]}
    print(f"$ {rec['cmd']}  (rc {rc}, {rec['seconds']} s)\n{out[-6000:]}", flush=True)
    log.write(json.dumps(rec) + "\n")
    log.flush()
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accelerator", default="cuda")
    ap.add_argument("--cifar", default=None, help="folder with the CIFAR-10 python batches")
    ap.add_argument("--budget-s", type=float, default=600, help="seconds for the CIFAR-10 training")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU dry run of this script)")
    ap.add_argument("--out", default="gpu_check.jsonl")
    args = ap.parse_args()
    py = sys.executable
    acc = args.accelerator
    with open(args.out, "a") as log:
        import torch
        info = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
        print(info, flush=True)
        log.write(json.dumps({"info": info}) + "\n")
        # 1. the cuda tests (skip themselves without CUDA)
        _run([py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_accel.py"], 900, log)
        # 2. benchmarks against plain torch on the same device
        rep = "2" if args.quick else "5"
        _run([py, "benchmarks/bench_train.py", "--case", "resnet", "--accelerator", acc, "--repeats", rep,
              "--batch", str(16 if args.quick else args.batch)] + ([] if args.quick else ["--compile"]), 1200, log)
        _run([py, "benchmarks/bench_sim.py", "--only", "ab", "--accelerator", acc, "--repeats", rep], 900, log)
        # 3. sanet-resnet20 on CIFAR-10: one epoch timed, then as many more as the budget allows
        if args.cifar:
            lim = ["--limit-train", "256", "--limit-test", "128"] if args.quick else []
            base = [py, "-m", "neurosal.cli", "train", "--network", "sanet-resnet20", "--device", "moderate",
                    "--rule", "hybrid", "--dataset", "cifar10", "--data-dir", args.cifar, "--batch",
                    str(args.batch), "--lr", "0.05", "--accelerator", acc] + lim
            t0 = time.perf_counter()
            first = _run(base + ["--epochs", "1"], args.budget_s, log)
            per_epoch = time.perf_counter() - t0
            left = args.budget_s - per_epoch
            epochs = int(left // (per_epoch * 1.05))
            if first["rc"] == 0 and epochs >= 2:
                _run(base + ["--epochs", str(epochs)], left + 60, log)


if __name__ == "__main__":
    main()
