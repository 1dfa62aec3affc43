"""neurosal.convert: a trained torch MLP and CNN on the chip, programmed by counted
write-and-verify, keep their accuracy on the ideal device; the rest of the model is untouched;
the converted model trains on chip."""

import pytest
import torch
from torch import nn

import neurosal
from neurosal.crossbar import AnalogConv2d, AnalogLinear, PulseSGD, analog_layers
from neurosal.datasets import load


@pytest.fixture(scope="module")
def digits():
    return load("digits", seed=0)


def _fit(model, d, steps=300):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for i in range(steps):
        j = torch.randint(0, len(d.y_train), (64,))
        loss = nn.functional.cross_entropy(model(d.x_train[j]), d.y_train[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _acc(model, d):
    with torch.no_grad():
        return float((model(d.x_test).argmax(1) == d.y_test).float().mean())


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x.reshape(-1, 1, 8, 8)))).flatten(1))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_a_converted_model_keeps_its_accuracy_on_ideal(digits, kind):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)) if kind == "mlp" else CNN()
    model = _fit(model, digits)
    before = _acc(model, digits)
    ref = [p.detach().clone() for p in model.parameters()]
    chip, rep = neurosal.convert(model, device="ideal")
    assert all(torch.equal(a, b) for a, b in zip(ref, model.parameters()))      # the input model is untouched
    kinds = [type(m) for m in analog_layers(chip)]
    assert kinds == ([AnalogLinear, AnalogLinear] if kind == "mlp" else [AnalogConv2d, AnalogLinear])
    assert isinstance(chip[1] if kind == "mlp" else chip.pool, (nn.ReLU, nn.MaxPool2d))   # the rest as it was
    # programmed, with pulses and verify reads counted, every weight within one pulse step
    assert rep.pulses > 0 and rep.verify_reads > 0
    assert rep.pulses == sum(m.crossbar.counters.pulses for m in analog_layers(chip))
    for name, lay in rep.layers.items():
        assert lay["converged"] == 1.0 and lay["max_error"] <= lay["weight_scale"] / 1000 * (1 + 1e-6)
    after = _acc(chip, digits)
    assert before > 0.9 and abs(after - before) <= 0.01, (before, after)
    with torch.no_grad():
        gap = float((chip(digits.x_test) - model(digits.x_test)).abs().max())
    assert gap < 0.1


def test_the_converted_model_trains_on_chip(digits):
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    chip, _ = neurosal.convert(model, device="moderate", adc_bits=8, calibrate=digits.x_train[:128])
    assert all(m.crossbar.adc_range != 12.0 for m in analog_layers(chip))       # calibrated
    opt = PulseSGD(chip.parameters(), lr=0.1)
    before = sum(m.crossbar.counters.pulses for m in analog_layers(chip))
    loss = nn.functional.cross_entropy(chip(digits.x_train[:32]), digits.y_train[:32])
    loss.backward()
    opt.step()
    assert sum(m.crossbar.counters.pulses for m in analog_layers(chip)) > before


def test_unsupported_layers_are_named():
    with pytest.raises(ValueError, match=r"0: Conv2d with groups = 2 is not supported on a crossbar"):
        neurosal.convert(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), device="ideal")
    with pytest.raises(ValueError, match="has no nn.Linear or nn.Conv2d layer"):
        neurosal.convert(nn.Sequential(nn.ReLU()), device="ideal")
