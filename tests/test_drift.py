"""Accuracy over time after programming: flat without drift; the drift law on the weights;
global compensation undoes a uniform drift exactly; the chip is left as it was."""

import dataclasses

import pytest
import torch

from neurosal.crossbar import analog_layers
from neurosal.datasets import load
from neurosal.experiments.drift import accuracy_over_time
from neurosal.training import train
from neurosal.networks import load_network

IDEAL_DRIFT = """
name = "ideal-drift"
model = "linear"
levels = 1001
g_min = 1.0e-7
g_max = 1.0e-5
[drift]
nu = {nu}
nu_std = {nu_std}
t0 = 1.0
"""


@pytest.fixture(scope="module")
def data():
    return load("digits", seed=0)


def _trained(tmp_path, nu, nu_std=0.0):
    card = tmp_path / f"d{nu}-{nu_std}.toml"
    card.write_text(IDEAL_DRIFT.format(nu=nu, nu_std=nu_std))
    rec = load_network("mlp-64-100-10")
    rec = dataclasses.replace(rec, periphery=dataclasses.replace(rec.periphery, adc_bits=None,
                                                                 adc_calibration="none"))
    r, net, data = train(rec, str(card), rule="hybrid", epochs=1, progress=False, return_net=True)
    return net.eval(), data


def test_without_drift_the_accuracy_is_flat(tmp_path):
    net, d = _trained(tmp_path, 0.0)
    r = accuracy_over_time(net, d.x_test, d.y_test, times=[0, 60, 86400, 3e7], repeats=2)
    accs = [row["accuracy"] for row in r["rows"]]
    assert len(set(accs)) == 1 and all(row["sd"] == 0 for row in r["rows"])


def test_drift_follows_the_power_law(tmp_path):
    nu = 0.1
    net, d = _trained(tmp_path, nu)
    layer = analog_layers(net)[0]
    xb = layer.crossbar
    w0 = xb.weights().clone()
    t_end = xb.time
    xb.time = t_end + 1e4                           # elapsed 1e4 s since programming (t_prog <= t_end)
    w = xb.weights()
    xb.time = t_end
    ratio = (w / w0)[w0.abs() > 1e-2]
    # every cell written during training has t_prog in [0, t_end] (the clock does not run while
    # training: t_end = 0), so each weight is its programmed value times ((t - t_prog)/t0)^-nu;
    # float32 differences of two conductances (~5e-6 S, |w| > 1e-2) are good to ~1e-5 relative
    assert t_end == 0.0
    assert torch.allclose(ratio, torch.full_like(ratio, 1e4 ** -nu), rtol=1e-4, atol=0)


def test_global_compensation_undoes_a_uniform_drift_exactly(tmp_path):
    net, d = _trained(tmp_path, 0.1)
    times = [0, 3600, 2.6e6]
    plain = accuracy_over_time(net, d.x_test, d.y_test, times=times)
    comp = accuracy_over_time(net, d.x_test, d.y_test, times=times, compensation="global")
    a0 = comp["rows"][0]["accuracy"]
    assert all(row["accuracy"] == a0 for row in comp["rows"])           # exactly: one gain per layer
    assert plain["rows"][-1]["accuracy"] < a0                            # uncompensated, a month costs accuracy
    al = comp["rows"][-1]["alphas"]
    assert al[0] > 1.5                                                   # (2.6e6)^0.1 = 4.4 on the last-written cells
    # the chip is put back: clock and gains as before
    again = accuracy_over_time(net, d.x_test, d.y_test, times=[0])
    assert again["rows"][0]["accuracy"] == plain["rows"][0]["accuracy"]


def test_a_spread_of_drift_exponents_is_not_undone_exactly(tmp_path):
    net, d = _trained(tmp_path, 0.1, nu_std=0.05)
    comp = accuracy_over_time(net, d.x_test, d.y_test, times=[0, 2.6e6], compensation="global")
    plain = accuracy_over_time(net, d.x_test, d.y_test, times=[0, 2.6e6])
    assert comp["rows"][1]["accuracy"] >= plain["rows"][1]["accuracy"]


@pytest.mark.parametrize("kw,msg", [(dict(compensation="local"), "compensation 'local': not allowed"),
                                    (dict(repeats=0), "repeats 0: not allowed"),
                                    (dict(times=[-1.0]), "allowed: finite numbers of seconds >= 0")])
def test_bad_arguments(tmp_path, kw, msg):
    net, d = _trained(tmp_path, 0.0)
    with pytest.raises(ValueError, match=msg):
        accuracy_over_time(net, d.x_test[:4], d.y_test[:4], **{"times": [1.0], **kw})


def test_evaluate_command(tmp_path, capsys):
    from neurosal.cli import main
    ck, png = tmp_path / "c.pt", tmp_path / "d.png"
    train("mlp-64-100-10", "severe", epochs=1, limit_train=64, limit_test=32, out=ck, progress=False)
    assert main(["evaluate", "--network", "mlp-64-100-10", "--device", "severe", "--checkpoint", str(ck),
                 "--times", "1,3600", "--repeats", "2", "--compensation", "none,global", "--limit-test", "32",
                 "-o", str(png), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "comp. global" in out and png.stat().st_size > 10_000
    assert main(["evaluate", "--network", "mlp-64-100-10", "--device", "severe", "--checkpoint", str(ck),
                 "--times", "soon"]) == 2
    assert "--times 'soon': not allowed" in capsys.readouterr().err
