"""Studies, sweeps and reports: expansion, parallel = serial, resume after a kill, failures
recorded, named errors for bad study files, the report's statistics."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from neurosal.cards import CardError
from neurosal.cli import main
from neurosal.studies.tables import report, summarize
from neurosal.studies.runs import expand, load_study, read_results, sweep, trial_id

BASE = """
name = "t"
cite = "a test"
[base]
network = "mlp-64-100-10"
dataset = "digits"
epochs = 1
limit_train = 64
limit_test = 32
batch = 16
"""


def _study(tmp_path, text, name="s.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_study_expands_to_its_trials(tmp_path):
    p = _study(tmp_path, BASE + """
[[grid]]
device = ["ideal", "severe"]
rule = ["hybrid"]
seed = [0, 1, 2]
"device.noise.c2c" = [0.0, 0.05]
[[grid]]
device = ["severe"]
rule = ["bp"]
rounding = ["round", "stochastic"]
seed = [0, 1, 2]
[variants.full]
limit_train = 1797
""")
    st = load_study(p)
    trials = expand(st)
    assert len(trials) == 2 * 3 * 2 + 2 * 3
    assert len({trial_id(t) for t in trials}) == len(trials)
    assert trials[0] == {"network": "mlp-64-100-10", "dataset": "digits", "epochs": 1, "limit_train": 64,
                         "limit_test": 32, "batch": 16, "device": "ideal", "rule": "hybrid", "seed": 0,
                         "device.noise.c2c": 0.0}
    assert all(t["rule"] == "bp" for t in trials[12:]) and {t["rounding"] for t in trials[12:]} == {"round",
                                                                                                 "stochastic"}
    full = load_study(p, variant="full")
    assert full.name == "t-full" and all(t["limit_train"] == 1797 for t in expand(full))
    # the data's folder is not part of a trial's identity
    assert trial_id({**trials[0], "data_dir": "/a"}) == trial_id({**trials[0], "data_dir": "/b"})


@pytest.mark.parametrize("extra,field,words", [
    ("[grid]\ndevices = ['ideal']\n", "grid.devices", "unknown option"),
    ("[grid]\ndevice = []\n", "grid.device", "non-empty list"),
    ("[grid]\nepochs = ['two']\n", "grid.epochs", "expected int"),
    ("[grid]\ndevice = 'ideal'\n", "grid.device", "non-empty list"),
    ("color = 'red'\n", "color", "unknown key"),
])
def test_bad_study_files_name_file_and_key(tmp_path, extra, field, words):
    text = BASE.replace('name = "t"\n', 'name = "t"\n' + extra) if extra.startswith("color") else BASE + extra
    p = _study(tmp_path, text)
    with pytest.raises(CardError) as e:
        load_study(p)
    assert str(p) in str(e.value) and field in str(e.value) and words in str(e.value)


def test_bad_study_errors_before_any_work(tmp_path, capsys):
    p = _study(tmp_path, BASE + "[grid]\ndevice = ['ideal']\n\"device.noise.cc2\" = [0.1]\n")
    out = tmp_path / "r.jsonl"
    assert main(["sweep", str(p), "--out", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert "bad card" in err and str(p) in err and "cc2" in err and not out.exists()
    with pytest.raises(CardError, match="no variant 'huge'"):
        load_study(_study(tmp_path, BASE + "[grid]\ndevice=['ideal']\n", "v.toml"), variant="huge")
    with pytest.raises(FileNotFoundError, match="no such study file"):
        load_study(tmp_path / "missing.toml")


STUDY = BASE + """
[grid]
device = ["severe"]
rule = ["hybrid", "bp"]
seed = [0, 1]
"""


def _strip(rec):
    r = dict(rec["result"])
    for k in ("seconds", "threads"):
        r.pop(k, None)
    return json.dumps(r, sort_keys=True)


def test_parallel_results_equal_serial_bit_for_bit(tmp_path):
    p = _study(tmp_path, STUDY)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert sweep(p, a, workers=1, progress=False)["run"] == 4
    assert sweep(p, b, workers=2, progress=False)["run"] == 4
    ra = {r["id"]: r for r in read_results(a)}
    rb = {r["id"]: r for r in read_results(b)}
    assert ra.keys() == rb.keys() and len(ra) == 4
    for k in ra:
        assert ra[k]["status"] == rb[k]["status"] == "ok"
        assert _strip(ra[k]) == _strip(rb[k])
    # a rerun finds everything done
    assert sweep(p, a, workers=1, progress=False) == {"trials": 4, "done_before": 4, "run": 0, "failed": 0}


def test_a_killed_sweep_resumes_and_runs_each_trial_once(tmp_path):
    p = _study(tmp_path, STUDY.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    out = tmp_path / "r.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "neurosal", "sweep", str(p), "--out", str(out), "--json",
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 120 and len(read_results(out)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(out)
    assert 2 <= len(before) < 6, "the sweep was not killed mid-way"
    with open(out, "ab") as fh:                    # and a torn line, as a kill mid-write leaves
        fh.write(b'{"id": "torn", "sta')
    r = sweep(p, out, progress=False)
    assert r["done_before"] == len(before) and r["run"] == 6 - len(before)
    recs = read_results(out)
    ids = [x["id"] for x in recs]
    assert sorted(ids) == sorted({trial_id(t) for t in expand(load_study(p))}) and len(ids) == 6


def test_a_failing_trial_is_recorded_and_the_rest_finish(tmp_path):
    p = _study(tmp_path, BASE.replace('dataset = "digits"', "") + """
[grid]
device = ["ideal"]
dataset = ["digits", "mnist"]
seed = [0, 1]
""")
    out = tmp_path / "r.jsonl"
    r = sweep(p, out, data_dir=str(tmp_path / "no-such-folder"), progress=False)
    assert r["run"] == 4 and r["failed"] == 2
    recs = read_results(out)
    bad = [x for x in recs if x["status"] == "error"]
    assert len(bad) == 2 and all(x["config"]["dataset"] == "mnist" for x in bad)
    assert all("no-such-folder" in x["error"] for x in bad)
    assert all(x["status"] == "ok" for x in recs if x["config"]["dataset"] == "digits")
    # the report shows the cells that ran and lists the failures
    rep = report(out)
    assert "2 failed trial(s)" in rep["tables"]["t"]
    # a rerun tries the failed ones again (still failing), not the finished ones
    r2 = sweep(p, out, data_dir=str(tmp_path / "no-such-folder"), progress=False)
    assert r2["done_before"] == 2 and r2["run"] == 2


def test_report_statistics_tables_and_plots(tmp_path):
    recs = []
    for dev, accs in (("ideal", [0.9, 0.8, 0.85]), ("severe", [0.5, 0.7])):
        for seed, a in enumerate(accs):
            cfg = {"network": "m", "device": dev, "rule": "hybrid", "seed": seed}
            recs.append({"id": trial_id(cfg), "study": "s", "config": cfg, "status": "ok", "seconds": 1.0,
                         "result": {"test_accuracy": a, "pulses": 10, "history": [{"test_accuracy": a / 2},
                                                                                   {"test_accuracy": a}],
                                    "cost": {"inference": {"energy_per_sample_j": 1e-9},
                                             "training": {"energy_j": 1e-3, "latency_s": 1e-6}}}})
    s = summarize(recs)["s"]
    assert s["axes"] == ["device"]
    ideal, severe = s["cells"]
    m, se, n = ideal["accuracy"]
    assert n == 3 and m == pytest.approx(0.85) and se == pytest.approx(0.05 / math.sqrt(3), rel=1e-12)
    m, se, n = severe["accuracy"]
    assert n == 2 and m == pytest.approx(0.6) and se == pytest.approx(math.sqrt(0.02) / math.sqrt(2), rel=1e-12)
    assert ideal["history"][0][0] == pytest.approx(0.425)
    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = report(out, tmp_path / "rep")
    assert "| ideal | 3 | 0.85 ± 0.029 |" in rep["tables"]["s"]
    for suffix in ("s.md", "s.csv", "s_accuracy_device.png", "s_energy.png", "s_curves.png"):
        f = tmp_path / "rep" / suffix
        assert f.is_file() and f.stat().st_size > 0
    assert not (tmp_path / "rep" / "s_accuracy_configuration.png").exists()     # one grid: no side-by-side plot
    # grids with different axes (a strategy per grid): every configuration side by side
    extra = dict(recs[0], config={**recs[0]["config"], "attach": "3"})
    extra["id"] = trial_id(extra["config"])
    out.write_text("".join(json.dumps(r) + "\n" for r in recs + [extra]))
    report(out, tmp_path / "rep2")
    assert (tmp_path / "rep2" / "s_accuracy_configuration.png").stat().st_size > 0


def test_report_of_a_missing_or_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such results file"):
        report(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="no trial records"):
        report(tmp_path / "e.jsonl")


@pytest.mark.slow
def test_ray_results_equal_local(tmp_path):
    ray = pytest.importorskip("ray")
    p = _study(tmp_path, STUDY)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sweep(p, a, workers=1, progress=False)
    try:
        sweep(p, b, ray="local", ray_init={"num_cpus": 2, "include_dashboard": False}, progress=False)
    finally:
        ray.shutdown()
    ra = {r["id"]: _strip(r) for r in read_results(a)}
    rb = {r["id"]: _strip(r) for r in read_results(b)}
    assert ra == rb and len(ra) == 4


def test_card_fields_lists_tables_none_and_dataset_folders(tmp_path):
    """A card field takes a list (MLP sizes), a table of fields set together (E+ and E-), or
    "none" (its default: an ideal ADC); data_dir's {dataset} is each trial's dataset."""
    from neurosal.studies.runs import _cards, run_trial
    p = _study(tmp_path, BASE + """
[grid]
device = ["ideal"]
"network.sizes" = [[64, 32, 10]]
"network.charge" = [{e_plus = 2.0, e_minus = -2.0}]
"network.periphery.adc_bits" = ["none", 6]
""")
    trials = expand(load_study(p))
    assert len(trials) == 2
    net, dev = _cards(trials[0])
    assert net.sizes == (64, 32, 10) and (net.charge.e_plus, net.charge.e_minus) == (2.0, -2.0)
    assert net.periphery.adc_bits is None and _cards(trials[1])[0].periphery.adc_bits == 6
    assert net.charge.v_th == 1.0                      # the other fields of the table are kept
    rec = run_trial({**trials[1], "dataset": "mnist", "data_dir": str(tmp_path / "{dataset}")}, threads=1)
    assert rec["status"] == "error" and str(tmp_path / "mnist") in rec["error"]


def test_shipped_studies_load_and_build(tmp_path):
    """Every shipped study expands and every trial's cards build (no training here)."""
    from neurosal.cards import card_dir
    from neurosal.studies.runs import _cards
    root = card_dir("studies")
    files = sorted(root.glob("*.toml"))
    assert {f.stem for f in files} >= {"kwon-hybrid", "wolters-dfa", "sakemi-dstd", "coding"}
    for f in files:
        st = load_study(f)
        assert st.cite and st.cut, f"{f.name}: a study cites what it reproduces and says what it cut"
        trials = expand(st)
        assert len(trials) >= 3
        for t in trials:
            _cards(t)


def test_a_variant_replaces_base_values_and_axes(tmp_path):
    p = _study(tmp_path, BASE + """
[grid]
device = ["ideal", "mild", "severe"]
seed = [0, 1]
[variants.small]
limit_train = 8
device = ["severe"]
[variants.bad]
device = "severe"
""")
    t = expand(load_study(p, variant="small"))
    assert len(t) == 2 and {x["device"] for x in t} == {"severe"} and all(x["limit_train"] == 8 for x in t)
    with pytest.raises(CardError, match="grid axis: give a non-empty list"):
        load_study(p, variant="bad")


_POOL_SCRIPT = """
import os, sys, time, multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from neurosal.studies.runs import _worker_init
with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                         initializer=_worker_init, initargs=(1, os.getpid(), 0.05)) as ex:
    print(ex.submit(os.getpid).result(), flush=True)
    ex.submit(time.sleep, 120)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"   # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc to watch the worker")
def test_sweep_workers_end_with_their_parent(tmp_path):
    """A sweep killed mid-trial (SIGKILL: no cleanup runs) must not leave its pool workers on the cores."""
    parent = subprocess.Popen([sys.executable, "-c", _POOL_SCRIPT], stdout=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.3)                                          # the worker is in its 120 s trial
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the pool worker outlived its killed parent"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
