"""SAnet: shapes for every dataset, co-processor accounting, attachment strategies, training."""

import pytest
import torch

from neurosal.coprocessor import CBAMBlock, CoProcessor, NumberFormat, SEBlock
from neurosal.crossbar import analog_layers
from neurosal.training import train
from neurosal.networks import build, list_networks, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_recipe_builds_for_every_dataset_shape(shape):
    for name in ("sanet-resnet8", "resnet8"):
        net = build(name, device="ideal", coding="rate", input_shape=shape, classes=10)
        y = net(torch.rand(2, *shape))
        assert y.shape == (2, 10)
    assert {"sanet-resnet8", "sanet-resnet20", "resnet8", "resnet20", "mlp-784-400-400-10"} <= set(list_networks())


def test_every_conv_and_fc_is_on_crossbars():
    net = build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    analog = analog_layers(net)
    # stem + 3 blocks x 2 convs + 2 projections + fc = 10 arrays; the only digital conv is CBAM's
    assert len(analog) == 10 and n_conv == 0
    assert all(a.crossbar.device.card.name == "moderate" for a in analog)


def test_se_block_accounting():
    """SE on C x H x W: C·H·W values cross in and out; MACs = 2·C·(C/r) per sample."""
    cp = CoProcessor(NumberFormat("float"))
    blk = SEBlock(16, cp, reduction=4)
    x = torch.rand(3, 16, 5, 5)
    y = blk(x)
    c = cp.counters
    assert c.transfers_in == 3 * 16 * 25 and c.transfers_out == 3 * 16 * 25
    assert c.macs == 3 * (16 * 4 + 4 * 16)
    assert torch.all(y <= x + 1e-7) and torch.all(y >= 0)            # gates in (0, 1) scale a positive map


def test_cbam_block_accounting_and_fixed_point():
    cp = CoProcessor(NumberFormat("fixed", bits=8, frac_bits=4))
    blk = CBAMBlock(8, cp, reduction=2)
    y = blk(torch.rand(2, 8, 6, 6))
    assert cp.counters.transfers_in == 2 * 8 * 36
    assert cp.counters.macs == 2 * 2 * (8 * 4 + 4 * 8) + 2 * 36 * 2 * 49     # channel MLP twice + 7x7 conv
    assert torch.allclose(y * 16, torch.round(y * 16))                      # values on the 1/16 grid
    q = NumberFormat("fixed", bits=8, frac_bits=4).quantize(torch.tensor([100.0, -100.0, 0.03125]))
    assert q.tolist() == [127 / 16, -128 / 16, 0.0]                         # saturates; rounds half to even
    with pytest.raises(ValueError, match="frac_bits < bits"):
        NumberFormat("fixed", bits=8, frac_bits=8)


def test_detach_removes_all_digital_work():
    net = build("sanet-resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    x = torch.rand(4, 64)
    net(x)
    assert net.coprocessor.counters.transfers_in > 0
    net.coprocessor.counters.reset()
    net.detach()
    net(x)
    assert net.coprocessor.counters.as_dict() == {k: 0 for k in net.coprocessor.counters.as_dict()}
    net.attach([3])
    net(x)
    assert net.coprocessor.counters.transfers_in == 4 * 64 * 2 * 2          # stage 3: 64 channels of 2x2


def test_sanet_checkpoint_round_trip(tmp_path):
    a = build("sanet-resnet8", device="severe", coding="rate", input_shape=(1, 8, 8), classes=10, seed=1)
    r = train("sanet-resnet8", "severe", rule="hybrid", coding="rate", epochs=1, seed=1, limit_train=64,
              limit_test=32, progress=False, out=tmp_path / "ck.pt")
    assert r["pulses"] > 0
    load_checkpoint(a, tmp_path / "ck.pt")
    a.eval()
    b = build("sanet-resnet8", device="severe", coding="rate", input_shape=(1, 8, 8), classes=10, seed=1)
    save_checkpoint(a, tmp_path / "ck2.pt")
    load_checkpoint(b, tmp_path / "ck2.pt")
    b.eval()
    x = torch.rand(5, 64)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.slow
def test_sanet_resnet8_ideal_reaches_95_percent_on_digits():
    r = train("sanet-resnet8", "ideal", rule="hybrid", coding="rate", epochs=5, seed=0, lr=0.1, batch=16,
              progress=False)
    assert r["test_accuracy"] >= 0.95


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="SALMON's claim is not robustly reproduced on digits: the sign of the "
                   "3-seed difference flips with changes of the noise stream (sanet-resnet8 vs resnet8 on "
                   "'severe', 5 epochs of hybrid: 0.964/0.967/0.984 vs 0.964/0.708/0.996 before the per-tile "
                   "convolution read, 0.929/0.969/0.976 vs 0.978/0.947/0.998 after it; over 5 seeds after it, 0.957 vs "
                   "0.977, paired difference -0.020 +- 0.012; with the parallel noise generator 0.960/0.851/0.993 "
                   "vs 0.944/0.706/0.993, which passes). It records the claim until issue 14 settles it with "
                   "enough seeds on real data; its outcome is the seed noise, so it is not strict")
def test_attention_helps_on_severe_device():
    """SALMON's claim, judged over three seeds: on 'severe', SE attention raises the mean final
    accuracy over the plain backbone, and its worst seed is no worse."""
    kw = dict(rule="hybrid", coding="rate", epochs=5, lr=0.1, batch=16, progress=False)
    with_attn = [train("sanet-resnet8", "severe", seed=s, **kw)["test_accuracy"] for s in range(3)]
    plain = [train("resnet8", "severe", seed=s, **kw)["test_accuracy"] for s in range(3)]
    assert sum(with_attn) > sum(plain), (with_attn, plain)
    assert min(with_attn) >= min(plain), (with_attn, plain)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_vgg7_charge_builds_and_every_conv_gets_a_gradient(shape):
    net = build("vgg7-charge", device="moderate", coding="latency", input_shape=shape, classes=10)
    assert len(analog_layers(net)) == 7                                  # six convs + fc, all on crossbars
    logits = net(torch.rand(2, int(torch.tensor(shape).prod())))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    for layer in analog_layers(net):
        assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in analog_layers(net))


@pytest.mark.slow
def test_spike_coded_sanet_learns_on_digits():
    """Spike-coded SAnet (T = 8, LIF after every conv, SEW adds, BPTT) trained with hybrid on
    'moderate': 0.878 after 3 epochs when measured (rate-coded: 0.949)."""
    r = train("sanet-resnet8", "moderate", rule="hybrid", coding="spike", epochs=3, seed=0, lr=0.1, batch=8,
              progress=False)
    assert r["test_accuracy"] > 0.8


@pytest.mark.slow
def test_vgg7_charge_learns_on_digits():
    r = train("vgg7-charge", "ideal", rule="bp", coding="latency", epochs=2, seed=0, lr=0.1, batch=16,
              progress=False)
    assert r["test_accuracy"] > 0.6


def test_spike_coded_sanet_runs_and_backpropagates_through_time():
    net = build("sanet-resnet8", device="moderate", coding="spike", input_shape=(1, 8, 8), classes=10, steps=4)
    x = torch.rand(3, 64)
    logits = net(x)
    assert logits.shape == (3, 10)
    # the attention saw one spike map per step: 4 steps x (16*8*8 + 32*4*4 + 64*2*2) values per sample
    n_map = 3 * 4 * (16 * 64 + 32 * 16 + 64 * 4)
    c = net.coprocessor.counters
    assert c.transfers_in == n_map and c.transfers_out == n_map
    macs = c.macs
    logits.sum().backward()
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in analog_layers(net))
    # backward on the co-processor: the gradients cross back, and twice the forward MACs
    assert c.transfers_in == 2 * n_map and c.transfers_out == 2 * n_map and c.macs == 3 * macs


def test_spike_sanet_layer_by_layer_equals_step_by_step():
    """Spike mode reads all T steps of a layer at once; in inference (BN a fixed affine map) that
    is the same network as stepping every layer one time step at a time, with the same reads."""
    from neurosal.neurons import lif_step
    net = build("sanet-resnet8", device="ideal", coding="spike", input_shape=(1, 8, 8), classes=10, steps=5)
    net.eval()
    for m in net.modules():                     # non-trivial BN statistics, so neurons fire
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.05, 0.05, generator=torch.Generator().manual_seed(3))
            m.running_var.fill_(0.02)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    gen_state = net._spike_gens.get("cpu").get_state()
    with torch.no_grad():
        got = net(x)
        reads_got = [a.crossbar.counters.forward_reads for a in analog_layers(net)]
        for a in analog_layers(net):
            a.crossbar.counters.reset()
        net._spike_gens.get("cpu").set_state(gen_state)
        spikes = (torch.rand((5,) + tuple(x.shape), generator=net._spike_gens.get("cpu")) < x).float()
        v, out = {}, 0.0

        def neuron(key, c):
            z, v[key] = lif_step(c, v.get(key, torch.zeros_like(c)), net.lif, net.dt)
            return z
        for t in range(5):
            h = neuron("stem", net.bn(net.stem(spikes[t])))
            for i, stage in enumerate(net.stages, start=1):
                for j, blk in enumerate(stage):
                    z1 = neuron(f"{i}{j}a", blk.bn1(blk.conv1(h)))
                    z2 = neuron(f"{i}{j}b", blk.bn2(blk.conv2(z1)))
                    h = z2 + (h if blk.short is None else neuron(f"{i}{j}s", blk.short(h)))
                if i in net.attached:
                    h = net.attn[str(i)](h)
            out = out + net.fc(h.mean((2, 3)))
        want = net.spike_logit_scale * out / 5
    assert got.abs().sum() > 0
    assert torch.allclose(got, want, atol=1e-5)
    assert reads_got == [a.crossbar.counters.forward_reads for a in analog_layers(net)]
