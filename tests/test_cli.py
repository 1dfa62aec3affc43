"""The command line: device listing, curves as JSON, plots, and errors on bad cards."""

import json
from pathlib import Path

import numpy as np
import pytest

from neurosal.cli import main
from neurosal.devices import Device


def test_devices_list_json(capsys):
    assert main(["devices", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"ideal", "severe", "ag-a-si", "extreme-nonlinear"} <= names


def test_devices_show_by_name_and_path(capsys, card_file):
    assert main(["devices", "show", "ag-a-si", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["levels"] == 97 and d["pmax"] == 96 and d["a_up_effective"] == pytest.approx(0.499, rel=0.01)
    p = card_file('name="mine"\nmodel="linear"\nlevels=5\ng_min=1e-6\ng_max=2e-6\n')
    assert main(["devices", "show", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "mine"


def test_devices_curve_json_matches_nominal_device(capsys):
    assert main(["devices", "curve", "ideal", "--pulses", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    up, down = np.array(d["potentiation"]), np.array(d["depression"])
    assert up.size == 11 and down.size == 11
    # linear device: 10 pulses of (Gmax - Gmin)/1000 each, up then down again
    np.testing.assert_allclose(np.diff(up), (1e-5 - 1e-7) / 1000, rtol=1e-9)
    np.testing.assert_allclose(down[-1], up[0], rtol=1e-9)
    assert up[-1] == down[0]


def test_devices_curve_extreme_is_asymmetric(capsys):
    assert main(["devices", "curve", "extreme-nonlinear", "--pulses", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    up, down = np.array(d["potentiation"]), np.array(d["depression"])
    ref_up, ref_down = Device("extreme-nonlinear").curve(32)
    np.testing.assert_allclose(up, ref_up)
    # depression from Gmax drops faster than potentiation rises from Gmin (A_down < A_up)
    assert (down[0] - down[1]) > (up[1] - up[0])


def test_devices_plot_writes_png(tmp_path):
    out = tmp_path / "c.png"
    assert main(["devices", "plot", "ideal", "severe", "-o", str(out), "--samples", "20"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_card_on_cli_names_file_and_field(capsys, card_file):
    p = card_file('name="x"\nmodel="linear"\nlevels=5\ng_min=2e-6\ng_max=1e-6\n')
    assert main(["devices", "show", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "g_max" in err and "Gmin >= Gmax" in err
    assert main(["devices", "show", "nonexistent-device"]) == 2
    assert "available:" in capsys.readouterr().err


# ------------------------------------------------------------------------------ simulate / inspect
def test_simulate_and_inspect(tmp_path, capsys):
    out = tmp_path / "run.h5"
    args = ["simulate", "--network", "mlp-64-100-10", "--device", "moderate", "--coding", "spike", "--steps", "16",
            "--samples", "40", "--dataset", "digits", "--record", "spikes,v", "--record-samples", "4",
            "--out", str(out), "--json"]
    assert main(args) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["samples"] == 40 and s["steps"] == 16 and 0 <= s["accuracy"] <= 1
    assert s["layers"]["fc1"]["input_events"] > 0 and s["layers"]["fc1"]["spikes"] > 0
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and set(info["populations"]) == {"input", "fc1", "fc2"}
    assert info["populations"]["fc1"]["samples"] == 4 and info["reports"]["fc1.v"]["shape"] == [16, 400]
    assert info["metadata"]["config"]["device"] == "moderate" and info["metadata"]["seed"] == 0
    png = tmp_path / "raster.png"
    assert main(["inspect", str(out), "--raster", "-o", str(png), "--sample", "1"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an existing output needs --overwrite, and nothing is lost
    before = out.read_bytes()
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite", "--seed", "1"]) == 0


def test_simulate_latency_and_rate(capsys):
    for coding in ("latency", "rate"):
        assert main(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--coding", coding,
                     "--samples", "20", "--record", "", "--json"]) == 0
        s = json.loads(capsys.readouterr().out)
        assert s["steps"] == (1 if coding == "rate" else 32)


def test_simulate_and_inspect_errors(tmp_path, capsys):
    assert main(["simulate", "--network", "nope", "--device", "ideal"]) == 2
    err = capsys.readouterr().err
    assert "no shipped network card of that name; available:" in err and "mlp-64-100-10" in err
    assert main(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--record", "spikes,volts"]) == 2
    assert "unknown variable(s) volts" in capsys.readouterr().err
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    assert main(["inspect", str(bad)]) == 2
    assert "not a readable HDF5 file" in capsys.readouterr().err


def test_simulate_other_dataset_adapts_the_recipe(tmp_path, capsys):
    from test_datasets import _mnist_dir
    _mnist_dir(tmp_path / "mn", n_train=4, n_test=6)
    assert main(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--dataset", "mnist",
                 "--data-dir", str(tmp_path / "mn"), "--steps", "4", "--record", "", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["samples"] == 6 and s["layers"]["fc1"]["reads"] == 4
    assert main(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--dataset", "cifar10",
                 "--data-dir", str(tmp_path / "none")]) == 2
    assert "no such directory; download cifar-10-python.tar.gz" in capsys.readouterr().err


def test_train_json_and_checkpoint(tmp_path, capsys):
    out = tmp_path / "ck.pt"
    args = ["train", "--network", "mlp-64-100-10", "--device", "moderate", "--rule", "hybrid", "--coding", "rate",
            "--dataset", "digits", "--epochs", "1", "--seed", "0", "--limit-train", "100", "--out", str(out), "--json"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"test_accuracy", "epochs", "pulses"} <= set(r) and r["epochs"] == 1 and r["pulses"] > 0
    # energy from the cost ledger: phases add up, and the write energy is the pulses' energy
    from neurosal.cost import device_energies, load_periphery
    from neurosal.devices import load_device
    ct = r["cost"]["training"]
    assert r["energy_j"] == ct["energy_j"] == pytest.approx(sum(ct["phases"].values()), rel=1e-12, abs=0)
    w = device_energies(load_device("moderate"), load_periphery())["write_j"]
    assert ct["components"]["write"] == pytest.approx(r["pulses"] * w, rel=1e-9, abs=0)
    assert r["cost"]["inference"]["energy_per_sample_j"] > 0 and r["cost"]["inference"]["digital_energy_j"] == 0
    assert out.is_file()
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    # the trained chip simulates from its checkpoint
    assert main(["simulate", "--network", "mlp-64-100-10", "--device", "moderate", "--coding", "rate",
                 "--checkpoint", str(out), "--record", "", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["checkpoint"] and s["accuracy"] == pytest.approx(r["test_accuracy"], abs=0.15)


def test_compare_coding(tmp_path, capsys):
    png = tmp_path / "cmp.png"
    assert main(["compare-coding", "--network", "mlp-64-100-10", "--device", "ideal", "--epochs", "1", "--steps", "8",
                 "--limit-train", "120", "--limit-test", "50", "-o", str(png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rate, spike = r["codings"]
    assert rate["coding"] == "rate" and rate["steps"] == 1 and spike["steps"] == 8
    assert spike["spikes_per_sample"] > 0 and rate["spikes_per_sample"] is None
    assert spike["synaptic_events_per_sample"] > 0 and rate["synaptic_events_per_sample"] > 0
    assert rate["energy_per_sample_j"] > 0 and spike["energy_per_sample_j"] > 0 and spike["train_energy_j"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_compare_coding_three_codings_over_seeds(tmp_path, capsys):
    """rate, spike and latency side by side over seeds: every figure is the mean of the
    per-seed values with its standard error (sample standard deviation / sqrt(n)); bad lists
    are named errors."""
    import math
    png = tmp_path / "cmp3.png"
    assert main(["compare-coding", "--network", "mlp-64-100-10", "--device", "ideal", "--epochs", "1", "--steps", "8",
                 "--limit-train", "64", "--limit-test", "40", "--codings", "rate,spike,latency", "--seeds", "0,1,2",
                 "-o", str(png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [c["coding"] for c in r["codings"]] == ["rate", "spike", "latency"] and r["seed"] == [0, 1, 2]
    for c in r["codings"]:
        accs = [s["test_accuracy"] for s in c["per_seed"]]
        m = sum(accs) / 3
        assert c["test_accuracy"] == pytest.approx(m)
        assert c["test_accuracy_se"] == pytest.approx(math.sqrt(sum((a - m) ** 2 for a in accs) / 2 / 3))
        assert c["latency_per_sample_s"] > 0 and c["energy_per_sample_j"] > 0
    assert r["codings"][1]["spikes_per_sample"] > 0 and r["codings"][2]["spikes_per_sample"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    for bad, msg in ((["--codings", "rate,morse"], "--codings"), (["--seeds", "0,x"], "--seeds")):
        assert main(["compare-coding", "--network", "mlp-64-100-10", "--device", "ideal", *bad]) == 2
        assert msg in capsys.readouterr().err


def test_train_hybrid_readback_is_counted_and_only_for_hybrid(capsys):
    """--readback K: the hybrid controller reads every array every K steps (2 verify reads per
    pair); the pure open-loop default reads nothing; other rules refuse the option."""
    base = ["train", "--network", "mlp-64-100-10", "--device", "moderate", "--coding", "rate", "--batch", "8",
            "--limit-train", "80", "--limit-test", "20", "--json"]
    reads = {}
    for k in (0, 5):
        assert main(base + ["--rule", "hybrid", "--readback", str(k)]) == 0
        r = json.loads(capsys.readouterr().out)
        reads[k] = r["verify_reads"]
        assert r["readback"] == k and "clipped_cells" in r
    assert reads[0] == 0 and reads[5] == (80 // 8 // 5) * 2 * (64 * 100 + 100 * 10)
    assert main(base + ["--rule", "bp", "--readback", "5"]) == 2
    assert "readback is an option of the hybrid rule" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["networks", "periphery", "coprocessor"])
def test_card_listings(kind, capsys):
    """`neurosal networks|periphery|coprocessor list|show`: every shipped card listed; `show --json`
    gives the fully resolved card, which builds the same card back."""
    import json as _json
    from neurosal.cards import from_dict
    from neurosal.cost import CoprocessorCost, PeripheryCost, list_coprocessors, list_periphery, load_coprocessor, \
        load_periphery
    from neurosal.networks import NetworkCard, list_networks, load_network
    names, load, cls = {"networks": (list_networks(), load_network, NetworkCard),
                        "periphery": (list_periphery(), load_periphery, PeripheryCost),
                        "coprocessor": (list_coprocessors(), load_coprocessor, CoprocessorCost)}[kind]
    assert main([kind, "list", "--json"]) == 0
    rows = _json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == names and names
    for n in names:
        assert main([kind, "show", n, "--json"]) == 0
        d = _json.loads(capsys.readouterr().out, object_hook=lambda o: {
            k: (float(v) if v in ("inf", "-inf") else v) for k, v in o.items()})      # JSON spells inf as a string
        assert from_dict(cls, d) == load(n)
    assert main([kind, "show", "no-such-card"]) == 2
    assert "no shipped" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["train", "--network", "mlp-64-100-10", "--device", "moderate", "--epochs", "2", "--lr", "0.05", "--binarize",
     "0.5", "--overwrite"],
    ["simulate", "--network", "mlp-64-100-10", "--device", "severe", "--coding", "latency", "--samples", "7"],
    ["sweep", "kwon-hybrid", "--out", "r.jsonl", "--workers", "2"],
])
def test_print_config_round_trips_through_config(tmp_path, capsys, argv):
    assert main(argv + ["--print-config"]) == 0
    first = capsys.readouterr().out
    cfg = tmp_path / "c.toml"
    cfg.write_text(first)
    assert main([argv[0], "--config", str(cfg), "--print-config"] + ([argv[1]] if argv[0] == "sweep" else [])) == 0
    assert capsys.readouterr().out == first
    # an option given on the command line wins over the file
    assert main([argv[0], "--config", str(cfg), "--seed" if argv[0] != "sweep" else "--workers", "3",
                 "--print-config"] + ([argv[1]] if argv[0] == "sweep" else [])) == 0
    out = capsys.readouterr().out
    assert ("seed = 3" if argv[0] != "sweep" else "workers = 3") in out


def test_a_bad_config_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = 2\nnetwork = 'mlp-64-100-10'\nbogus = 1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "field 'bogus': not an option of `neurosal train`" in capsys.readouterr().err
    bad.write_text("epochs = [1, 2]\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "expected a single value" in capsys.readouterr().err


def test_shipped_studies_are_listed_and_shown(capsys):
    assert main(["studies", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"kwon-hybrid", "coding", "neurosim-ag-a-si"} <= names
    kwon = next(r for r in rows if r["name"] == "kwon-hybrid")
    assert kwon["trials"] == 72 and Path(kwon["path"]).is_file()
    assert main(["studies", "show", "kwon-hybrid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 72
    assert main(["studies", "show", "no-such-study"]) == 2
    assert "shipped: analog-training, coding" in capsys.readouterr().err


def test_plot_comparison_draws_rows_without_seeds_or_errors(tmp_path):
    """The demo hands plot_comparison its own rows (one run, no seed list, no SE): a PNG."""
    from neurosal.experiments.compare import plot_comparison
    row = {"coding": "rate", "steps": 1, "test_accuracy": 0.9, "synaptic_events_per_sample": 10.0,
           "adc_conversions_per_sample": 5.0, "energy_per_sample_j": 1e-9, "latency_per_sample_s": 1e-6}
    p = plot_comparison({"network": "n", "device": "d", "dataset": "digits", "rule": "hybrid", "epochs": 1,
                         "codings": [row, {**row, "coding": "spike", "steps": 16}]}, tmp_path / "c.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
