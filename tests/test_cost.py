"""Cost model: hand counts times card figures, spike scaling, the attention's digital share,
BP vs DFA latency, card errors, device energies, and the CLI."""

import json
import math

import pytest
import torch

from neurosal.cards import CardError
from neurosal.cli import main
from neurosal.cost import (Ledger, cost_report, device_energies, load_coprocessor, load_periphery,
                           phase)
from neurosal.devices import load_device
from neurosal.engine import forward
from neurosal.learning import BP, DFA
from neurosal.networks import build, mlp
from neurosal.engine import Simulator


def approx(x, rel=1e-6):
    """pytest.approx without its default absolute tolerance of 1e-12, which would swallow
    every energy here (a device read is ~1e-16 J)."""
    return pytest.approx(x, rel=rel, abs=0)


def test_device_energies_follow_the_pulse_conditions():
    per = load_periphery()
    card = load_device("ag-a-si")
    e = device_energies(card, per)
    g = 0.5 * (card.g_min + card.g_max)
    p = card.pulse
    assert e["write_j"] == approx(0.5 * (p.v_up ** 2 + p.v_down ** 2) * p.width_up * g, rel=1e-12)
    assert e["read_j"] == approx(2 * p.v_read ** 2 * g * per.array.read_pulse_ns * 1e-9, rel=1e-12)
    assert e["pulse_s"] == p.width_up


def test_inference_and_training_totals_equal_a_hand_count_times_the_card():
    """Rate-coded 64-20-10 MLP, batch 8: every count is recomputed by hand from the inputs and
    activations and multiplied by the card's figures."""
    per, cp = load_periphery(), load_coprocessor()
    net = mlp([64, 20, 10], device="moderate", coding="rate", seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 64, generator=g) * (torch.rand(8, 64, generator=g) < 0.5)   # half the inputs zero
    led = Ledger(net, samples=8)
    noise = net.layers[0].crossbar.generator.get_state(), net.layers[0].crossbar.read_position
    with torch.no_grad(), led.phase("forward"):
        forward(net, x, coding="rate", steps=1)
    rep = cost_report(led)
    de = device_energies(load_device("moderate"), per)
    net.layers[0].crossbar.generator.set_state(noise[0])    # the same read-noise draws as the run
    net.layers[0].crossbar.read_position = noise[1]
    with torch.no_grad():
        h = net.layers[0].synapse(x).clamp(0, 1)
    e_adc = per.adc.energy_pj * 1e-12 * 2.0 ** (per.adc.default_bits - per.adc.bits)
    bits = per.dac.default_bits                      # ISAAC streams an analog input bit by bit
    assert per.dac.scheme == "bit-serial" and bits == 8
    want = 0.0
    for inp, n_out in ((x, 20), (h, 10)):
        nnz = int((inp != 0).sum())
        want += nnz * n_out * bits * per.dac.bit_density * de["read_j"]   # active rows x columns, per 1-bit
        want += nnz * bits * per.dac.energy_pj * 1e-12                    # 1-bit DAC, every cycle
        want += 8 * n_out * bits * e_adc                                  # every column, every bit cycle
        want += 8 * n_out * per.neuron.update_pj * 1e-12                  # neuron updates
    assert rep.energy_j == approx(want, rel=1e-9)
    assert rep.digital_energy_j == 0 and rep.analog_energy_j == approx(want, rel=1e-9)
    # latency: 8 bit cycles per vector per layer, tiles in parallel, layers pipelined
    t_vec = max(per.array.read_ns, 128 / per.adc.per_tile * per.adc.conversion_ns) * 1e-9
    assert rep.latency["forward"] == approx(8 * bits * t_vec + bits * t_vec, rel=1e-9)
    # a bp step: the update phase is exactly the pulses times the device's write energy
    rule = BP(net, lr=0.5, seed=0)
    tled = Ledger(net, samples=8)
    with tled.active():
        rule.step(x, torch.arange(8) % 10, coding="rate", steps=1, seed=0)
    t = cost_report(tled)
    pulses = tled.total("pulses")
    assert pulses > 0
    assert t.energy("update") == approx(pulses * de["write_j"], rel=1e-9)
    # backward: transposed reads of fc2 (fc1's input needs no error) + weight-gradient MACs
    macs = 8 * (64 * 20 + 20 * 10)
    assert tled.total("digital_macs", "backward") == macs
    assert t.energy("backward", "digital") == approx(macs * per.digital.mac_pj * 1e-12, rel=1e-9)
    assert cp.mac_pj > 0


def test_bit_serial_inputs_cost_one_read_and_conversion_per_bit(tmp_path):
    """The periphery card decides how analog inputs are applied. Bit-serial 1-bit DACs (ISAAC):
    an 8-bit analog vector is 8 array cycles and 8 conversions per column; a multi-bit DAC: one.
    Spikes are one bit either way, so only the analog (rate) side changes, by the bit count."""
    base = (tmp_path / "serial.toml")
    base.write_text('name = "serial"\n[dac]\nscheme = "bit-serial"\ndefault_bits = 6\nbit_density = 0.25\n')
    multi = (tmp_path / "multi.toml")
    multi.write_text('name = "multi"\n[dac]\nscheme = "multi-bit"\nenergy_pj = 0.5\n')
    reps = {}
    for coding in ("rate", "spike"):
        net = mlp([64, 32, 10], device="moderate", coding=coding, seed=0, steps=4)
        x = torch.rand(8, 64, generator=torch.Generator().manual_seed(0))
        led = Ledger(net, samples=8)
        with torch.no_grad(), led.phase("forward"):
            forward(net, x, coding=coding, steps=4, seed=0)
        for card in (base, multi):
            reps[coding, card.stem] = cost_report(led, periphery=card)
    s, m = reps["rate", "serial"], reps["rate", "multi"]
    assert s.energy(component="adc") == approx(6 * m.energy(component="adc"), rel=1e-12)
    assert s.adc_conversions() == approx(6 * m.adc_conversions(), rel=1e-12)
    assert s.energy(component="array") == approx(6 * 0.25 * m.energy(component="array"), rel=1e-12)
    assert s.latency["forward"] == approx(6 * m.latency["forward"], rel=1e-12)
    n_dac = led.total("dac_conversions")
    assert n_dac == 0                                          # the last ledger is the spiking run
    for comp in ("adc", "array"):                              # spikes: one bit, the scheme does not matter
        assert reps["spike", "serial"].energy(component=comp) == \
            approx(reps["spike", "multi"].energy(component=comp), rel=1e-12)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[dac]\nscheme = "pwm"\n')
    with pytest.raises(CardError, match=r"dac\.scheme.*one of 'bit-serial', 'multi-bit'"):
        load_periphery(bad)


def test_write_energy_uses_each_direction_own_pulse():
    """Potentiation and depression pulses have their own voltage and width: a write energy of
    V_up^2 G t_up per up pulse and V_down^2 G t_down per down pulse (on average over the two)."""
    import dataclasses
    from neurosal.devices import Pulse
    card = dataclasses.replace(load_device("ag-a-si"), pulse=Pulse(v_up=3.0, v_down=-1.0, width_up=2e-6,
                                                                   width_down=5e-7, v_read=0.2))
    e = device_energies(card, load_periphery())
    g = 0.5 * (card.g_min + card.g_max)
    assert e["write_j"] == approx(0.5 * (9.0 * 2e-6 + 1.0 * 5e-7) * g, rel=1e-12)
    assert e["pulse_s"] == 2e-6


def test_spike_energy_scales_with_the_number_of_input_spikes():
    net = mlp([256, 64], device="moderate", coding="spike", seed=0, steps=16)
    g = torch.Generator().manual_seed(1)
    s = (torch.rand(16, 32, 256, generator=g) < 0.1).float()
    keep = torch.rand(s.shape, generator=g) < 0.5
    half = s * keep
    energies = []
    for inp in (s, half):
        led = Ledger(net, samples=32)
        with torch.no_grad(), led.phase("forward"):
            Simulator(net, chunk=16).run(inp)
        energies.append(cost_report(led).energy(component="array"))
    ratio = energies[1] / energies[0]
    # the array energy is exactly proportional to the input spikes (cell reads = spikes x columns)
    assert ratio == approx(int(half.sum()) / int(s.sum()), rel=1e-9)
    assert abs(ratio - 0.5) < 5 * math.sqrt(0.25 / float(s.sum()))      # Binomial(kept, 1/2) within 5 SE


def test_removing_the_attention_removes_exactly_its_digital_share():
    net = build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    net.eval()
    x = torch.rand(4, 64, generator=torch.Generator().manual_seed(2))

    def report():
        led = Ledger(net, samples=4)
        with torch.no_grad(), led.phase("forward"):
            net(x)
        return cost_report(led)
    full = report()
    attn = {u: full.energy(unit=u) for u in ("attn.1", "attn.2", "attn.3")}
    assert all(v > 0 for v in attn.values())
    assert full.digital_energy_j == approx(sum(attn.values()), rel=1e-12)
    net.detach()
    off = report()
    assert off.digital_energy_j == 0.0 and off.energy(component="coprocessor") == 0.0
    net.attach([3])
    last = report()
    assert last.digital_energy_j == approx(attn["attn.3"], rel=1e-12)


def _saturating_step(rule_cls, net, x, y):
    """One step with an lr so large that every row of every layer hits the pulse limit."""
    rule = rule_cls(net, lr=1e4, seed=0, rounding="round")
    led = Ledger(net, samples=len(y))
    with led.active():
        rule.step(x, y, coding="rate", steps=1, seed=0)
    return led


def test_dfa_training_step_latency_is_backprop_over_n_when_updates_dominate(tmp_path):
    """Three equal 128x128 layers on a device with 1 ms pulses: the update phase dominates, BP
    writes the layers one after the other and DFA all at once, so the step latencies differ by
    the number of layers."""
    card = tmp_path / "slow.toml"
    card.write_text('name = "slow"\nmodel = "linear"\nlevels = 1000\ng_min = 1e-7\ng_max = 1e-5\n'
                    '[pulse]\nwidth_up = 1e-3\nwidth_down = 1e-3\n')
    dev = load_device(card)
    # sparse, varied inputs, so that every hidden unit is active for some sample (no zero row)
    x = (torch.rand(64, 128, generator=torch.Generator().manual_seed(3)) < 0.1).float()
    y = torch.arange(64) % 10
    lat = {}
    for name, cls in (("bp", BP), ("dfa", DFA)):
        net = mlp([128, 128, 128, 128], device=dev, coding="rate", seed=0)
        led = _saturating_step(cls, net, x, y)
        cycles = [led.counts["update"][u.name]["write_cycles"] for u in led.units]
        assert cycles == [128 * 64] * 3                  # every row: the 64-pulse limit
        lat[name] = cost_report(led, rule=cls.schedule).latency_s
    n = 3
    assert lat["dfa"] == approx(lat["bp"] / n, rel=0.01)


def test_phase_marks_do_nothing_without_a_ledger():
    with phase("forward"):
        pass
    led = Ledger(mlp([4, 2], coding="rate"))
    with pytest.raises(ValueError, match="unknown phase"):
        with led.phase("sideways"):
            pass


def test_a_bad_cost_card_names_the_file_and_field(tmp_path):
    good = (load_periphery().name, load_coprocessor().name)
    assert good == ("isaac-32nm", "puma-vfu-32nm")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[adc]\nenergy_pj = -1.0\n')
    with pytest.raises(CardError, match=r"bad\.toml.*adc\.energy_pj.*out of range"):
        load_periphery(bad)
    bad.write_text('name = "bad"\n[adc]\nenergy_uj = 1.0\n')
    with pytest.raises(CardError, match=r"adc\.energy_uj.*unknown field"):
        load_periphery(bad)
    cpb = tmp_path / "cp.toml"
    cpb.write_text('name = "cp"\nmac_pj = 1.0\n')
    with pytest.raises(CardError, match=r"cp\.toml.*required field is missing"):
        load_coprocessor(cpb)
    with pytest.raises(CardError, match="no shipped device card"):
        load_periphery("no-such-card")


def test_cost_cli_json_and_plot(tmp_path, capsys):
    png = tmp_path / "b.png"
    assert main(["cost", "--network", "mlp-64-100-10", "--device", "moderate", "--coding", "spike", "--rule", "bp",
                 "--batch", "4", "--json", "-o", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("energy_j", "latency_s", "area_mm2", "analog_energy_j", "digital_energy_j", "layers", "training_step"):
        assert k in out
    assert out["energy_j"] == approx(out["analog_energy_j"] + out["digital_energy_j"])
    assert [la["name"] for la in out["layers"]] == ["fc1", "fc2"]
    assert png.stat().st_size > 10_000
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[dac]\nenergy_pj = "x"\n')
    assert main(["cost", "--network", "mlp-64-100-10", "--device", "moderate", "--periphery", str(bad)]) == 2
    assert "dac.energy_pj" in capsys.readouterr().err


def test_measured_energies_in_a_device_card_take_precedence(tmp_path):
    card = tmp_path / "dev.toml"
    card.write_text('name = "dev"\nmodel = "linear"\nlevels = 64\ng_min = 1e-7\ng_max = 1e-5\n'
                    '[energy]\nwrite_pj = 12.5\nread_fj = 3.0\nsource = "a measurement"\n')
    e = device_energies(load_device(card), load_periphery())
    assert e["write_j"] == approx(12.5e-12) and e["read_j"] == approx(3.0e-15)
    assert e["derived"] == {"write": False, "read": False}
    card.write_text('name = "dev"\nmodel = "linear"\nlevels = 64\ng_min = 1e-7\ng_max = 1e-5\n'
                    '[energy]\nwrite_pj = -1\n')
    with pytest.raises(CardError, match=r"energy\.write_pj.*out of range"):
        load_device(card)


def test_charge_networks_count_their_neurons():
    net = build("charge-mlp-784-400-400-10", device="ideal", coding="latency", input_shape=(1, 8, 8), classes=10)
    net.eval()
    led = Ledger(net, samples=5)
    with torch.no_grad(), led.phase("forward"):
        net(torch.rand(5, 64, generator=torch.Generator().manual_seed(0)))
    c = led.counts["forward"]
    assert [c[k]["neuron_updates"] for k in ("layers.0", "layers.1", "layers.2")] == [5 * 400, 5 * 400, 5 * 10]
    assert 0 < c["layers.0"]["spikes"] <= 5 * 400 and c["layers.2"]["spikes"] == 0    # the readout never fires
    assert cost_report(led).energy(component="neuron") > 0


def test_verify_reads_take_one_row_cycle_per_row_of_a_tile():
    """A verify read reads a pair's two devices and a row's columns at once, rows one at a time
    per tile and tiles in parallel: reading a 256x64 array in 128x64 tiles takes 128 row cycles
    (not 2 x 256 x 64 / 64), and its latency is those cycles times one vector's read time."""
    from neurosal.crossbar import Crossbar
    xb = Crossbar(256, 64, "moderate", tile=(128, 64), seed=0)
    xb.verify_read()
    assert xb.counters.verify_reads == 2 * 256 * 64 and xb.counters.verify_cycles == 128
    mask = torch.zeros(256, 64, dtype=torch.bool)
    mask[:10, 3] = True                                   # 10 rows of the first tile
    mask[128:133, :] = True                               # 5 rows of the second
    xb.verify_read(mask)
    assert xb.counters.verify_cycles == 128 + 10
    r = xb.program(torch.full((256, 64), 0.2), tolerance=0.05, max_iterations=3)
    assert xb.counters.verify_reads == 2 * 256 * 64 + 2 * (10 + 5 * 64) + r.verify_reads


def test_backprop_passes_its_error_layer_after_layer_dfa_at_once():
    """Backward latency: the sum of the layers' backward times for BP (the error passes one layer
    after another), their maximum for DFA (e B_l reaches every layer at once)."""
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 10
    for name, cls in (("bp", BP), ("dfa", DFA)):
        net = mlp([64, 48, 32, 10], device="moderate", coding="rate", seed=0)
        rule = cls(net, lr=0.1, seed=0)
        led = Ledger(net, samples=16)
        with led.active():
            rule.step(x, y, coding="rate", steps=1, seed=0)
        rep = cost_report(led, rule=cls.schedule)
        per_layer = [la["phases"]["backward"]["latency_s"] for la in rep.per_layer()]
        assert all(t > 0 for t in per_layer)
        want = max(per_layer) if name == "dfa" else sum(per_layer)
        assert rep.latency["backward"] == approx(want, rel=1e-12)


def test_small_integer_inputs_are_streamed_in_their_own_bits():
    """Sums of spikes (0, 1, 2) are 2-bit codes: a bit-serial periphery streams them in 2 cycles,
    not in the DAC's 8; values (fractions, negatives) take the DAC's bits."""
    from neurosal.crossbar import Crossbar
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 3, (5, 40), generator=g).float()
    xb = Crossbar(40, 16, "ideal")
    xb.forward(codes)
    c = xb.counters
    assert (c.code_reads, c.code_cycles, c.analog_reads) == (5, 10, 0)
    assert c.code_cell_reads == int((codes != 0).sum()) * 16 and c.code_adc_conversions == 5 * 16
    xb.forward(codes * 0.5)                                        # 0, 0.5, 1: values
    xb.forward(codes - 1)                                          # -1, 0, 1: values (negative)
    assert (c.code_reads, c.analog_reads) == (5, 10)
    led = Ledger(mlp([40, 16], device="ideal", coding="rate"), samples=5)
    layer = led.units[0].crossbar
    with torch.no_grad(), led.phase("forward"):
        layer.forward(codes)
    rep = cost_report(led)
    per = load_periphery()
    assert rep.energy(component="adc") == approx(2 * 5 * 16 * per.adc.energy_pj * 1e-12, rel=1e-12)


def test_adc_energy_scales_as_two_to_the_bits():
    """Constant Walden figure of merit: a b-bit conversion costs e_ADC 2^(b - b0) with the card's
    b0 = 8 bits: a 6-bit ADC a quarter, a 10-bit one four times, per conversion."""
    per = load_periphery()
    x = torch.rand(4, 32, generator=torch.Generator().manual_seed(0))
    e = {}
    from neurosal.networks import NetworkCard, PeripheryCard
    for bits in (6, 8, 10):
        card = NetworkCard(name="m", sizes=(32, 16), periphery=PeripheryCard(adc_bits=bits))
        net = mlp([32, 16], device="ideal", coding="rate", seed=0, card=card)
        led = Ledger(net, samples=4)
        with torch.no_grad(), led.phase("forward"):
            forward(net, x, coding="rate", steps=1)
        e[bits] = cost_report(led).energy(component="adc") / led.total("adc_conversions")
    # x holds values: 8 bit-serial cycles, each converting every column
    assert e[8] == approx(per.adc.energy_pj * 1e-12 * per.dac.default_bits, rel=1e-12)
    assert e[6] == approx(e[8] / 4, rel=1e-12) and e[10] == approx(4 * e[8], rel=1e-12)


def test_cost_of_a_trained_checkpoint(tmp_path, capsys):
    """`neurosal cost --checkpoint` measures the trained chip: the checkpoint's conductances go
    into the recipe's network (a trained chip reads differently from a fresh one)."""
    ck = tmp_path / "c.pt"
    assert main(["train", "--network", "mlp-64-100-10", "--device", "moderate", "--limit-train", "64",
                 "--limit-test", "16", "--out", str(ck), "--json"]) == 0
    capsys.readouterr()
    args = ["cost", "--network", "mlp-64-100-10", "--device", "moderate", "--rule", "none", "--json"]
    assert main(args + ["--checkpoint", str(ck)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert trained["energy_j"] > 0 and trained["network"] == fresh["network"] == "mlp-64-100-10"
    assert trained["energy_j"] != fresh["energy_j"]
