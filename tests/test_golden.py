"""Golden runs: fixed-seed command lines (every rule, coding, network kind and device family)
whose printed results and written files must stay identical, bit for bit, through any change
that is not meant to change the physics (see tests/golden/scenarios.py)."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import scenarios  # noqa: E402

GOLDEN = json.loads(scenarios.GOLDEN.read_text())
PINNED_ON = json.loads(scenarios.MACHINE.read_text())
SAME_MACHINE = scenarios.machine() == PINNED_ON


def _diff(a, b, path="", bits=True):
    """The first place where two JSON-like values differ, as a readable string (None if equal).
    With ``bits=False`` only the shape is compared: keys, types, list lengths and exit codes."""
    if type(a) is not type(b) and not (not bits and {type(a), type(b)} <= {int, float}):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'the run' if k in a else 'the golden file'}"
            d = _diff(a[k], b[k], f"{path}/{k}", bits)
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _diff(x, y, f"{path}[{i}]", bits)
            if d:
                return d
        return None
    if not bits and not path.endswith("/rc"):
        return None
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_golden_runs_are_bit_identical(tmp_path):
    """Every scenario prints and writes exactly what it did when the golden file was made. On the
    machine it was pinned on every bit must agree; elsewhere the bits are compared too, and where
    they differ (another CPU's float sums) every result must keep its shape and exit code."""
    assert set(GOLDEN) == {s[0] for s in scenarios.SCENARIOS}, "golden.json and the scenarios disagree"
    got = scenarios.run_all(tmp_path)
    recs = {name: json.loads(json.dumps(rec, sort_keys=True)) for name, rec in got.items()}
    bad = {name: d for name, rec in recs.items() if (d := _diff(rec, GOLDEN[name]))}
    if bad and not SAME_MACHINE:
        warnings.warn(f"golden runs were pinned on {PINNED_ON}, this machine is {scenarios.machine()}: "
                      f"{len(bad)} of {len(recs)} differ in their bits, so only their shape is compared",
                      stacklevel=1)
        bad = {name: d for name, rec in recs.items() if (d := _diff(rec, GOLDEN[name], bits=False))}
    assert not bad, "golden runs changed:\n" + "\n".join(f"  {k}: {v}" for k, v in bad.items())


def test_golden_diff_sees_a_change():
    """The comparison fails on a changed last digit (the test can fail)."""
    rec = json.loads(json.dumps(GOLDEN["train-bp-rate"]))
    rec["output"]["history"][0]["loss"] += 1e-15
    assert _diff(rec, GOLDEN["train-bp-rate"])
    assert not _diff(rec, GOLDEN["train-bp-rate"], bits=False)
    rec["output"]["history"].append({})
    assert _diff(rec, GOLDEN["train-bp-rate"], bits=False)


@pytest.mark.slow
@pytest.mark.skipif(not SAME_MACHINE, reason="demo.txt was pinned on another machine (tests/golden/machine.json)")
def test_demo_output_is_unchanged(tmp_path):
    """`neurosal demo` prints the figures it printed when tests/golden/demo.txt was made."""
    out = subprocess.run([sys.executable, "-m", "neurosal", "demo", "--threads", "1", "--accelerator", "cpu",
                          "--out-dir", str(tmp_path)], capture_output=True, text=True, check=True).stdout
    lines = [ln.replace(str(tmp_path), "/tmp/demo_before") for ln in out.splitlines()
             if "sample/s" not in ln and not ln.startswith(("done in", "wrote"))]
    assert lines == (Path(scenarios.HERE) / "demo.txt").read_text().splitlines()


#: float rounding (another CPU's sums) may move a membrane across its threshold: event counts
#: may then differ by this many events plus this fraction
COUNT_ATOL, COUNT_RTOL = 2, 3e-3


def _close(a, b, path="", rtol=1e-5, atol=1e-6, counts=False):
    """The first place where two JSON-like values differ beyond float tolerance (integers and
    strings exactly), as a readable string (None if they agree). With ``counts`` the event
    counts (``/counts/...``) and what is computed from them (energy, latency) may differ by
    ``COUNT_ATOL`` events plus ``COUNT_RTOL`` of the pinned value."""
    if counts and (path.startswith("/counts/") or path in ("/energy_j", "/latency_s")) \
            and isinstance(a, (int, float)) and isinstance(b, (int, float)):
        slack = COUNT_RTOL * abs(b) + (COUNT_ATOL if isinstance(b, int) else 0.0)
        return None if abs(a - b) <= slack + atol + rtol * abs(b) else f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'the run' if k in a else 'the golden file'}"
            d = _close(a[k], b[k], f"{path}/{k}", rtol, atol, counts)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _close(x, y, f"{path}[{i}]", rtol, atol, counts)
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        return None if abs(a - b) <= atol + rtol * abs(b) else f"{path}: {a!r} != {b!r}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_engine_cases_match_their_pins():
    """Every recipe x coding gives the logits, event counts, energy and gradients pinned before
    the forwards moved into the one engine (tests/golden/engine_cases.py), to float tolerance,
    and so its event counts to a few events in 10^3 (a float rounding moves a threshold crossing;
    engine.json was pinned on an AVX512 machine, before golden.json was re-pinned on AVX2)."""
    import engine_cases
    golden = json.loads(engine_cases.GOLDEN.read_text())
    assert set(golden) == {engine_cases.case_name(r, c) for r, c, _ in engine_cases.CASES}
    got = engine_cases.run_all()
    bad = {k: d for k, v in got.items()
           if (d := _close(json.loads(json.dumps(v)), golden[k], counts=True))}
    assert not bad, "engine cases changed:\n" + "\n".join(f"  {k}: {v}" for k, v in bad.items())


def test_close_sees_a_change():
    rec = json.loads(json.dumps(json.loads((Path(__file__).parent / "golden" / "engine.json").read_text())))
    case = rec["sanet-resnet8/spike"]
    assert not _close(case, case)
    other = json.loads(json.dumps(case))
    other["scores"][0][0] += 1e-3
    assert _close(other, case)
    other = json.loads(json.dumps(case))
    other["counts"]["stem"]["spikes"] += 1
    assert _close(other, case)
    assert not _close(other, case, counts=True)          # one threshold crossing, another CPU
    n = case["counts"]["stem"]["spikes"]
    other["counts"]["stem"]["spikes"] = n + COUNT_ATOL + int(COUNT_RTOL * n) + 1
    assert _close(other, case, counts=True)
    other = json.loads(json.dumps(case))
    other["scores"][0][0] += 1e-3
    assert _close(other, case, counts=True)               # the tolerance is for counts only
