"""Grad-CAM of SAnet stages against a hand computation, block ablation equal to a network
built without the block, the map statistics, and the analysis leaving the chip untouched."""

import math

import numpy as np
import pytest
import torch

from neurosal.experiments.gradcam import ablation, concentration, correlation, off_chip, stage_cams
from neurosal.networks import build, save_checkpoint
from neurosal.networks import SAnet


def _net(attention="se", attach=(1, 2, 3), device="ideal", seed=0):
    return SAnet(8, 4, input_shape=(1, 8, 8), classes=10, attention=attention, attach=attach, device=device,
                 seed=seed)


def _bilinear(m: np.ndarray, H: int, W: int) -> np.ndarray:
    """Bilinear upsampling, half-pixel centres (align_corners=False), written out."""
    h, w = m.shape

    def axis(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        src = np.clip(src, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo
    ylo, yhi, fy = axis(H, h)
    xlo, xhi, fx = axis(W, w)
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            top = m[ylo[i], xlo[j]] * (1 - fx[j]) + m[ylo[i], xhi[j]] * fx[j]
            bot = m[yhi[i], xlo[j]] * (1 - fx[j]) + m[yhi[i], xhi[j]] * fx[j]
            out[i, j] = top * (1 - fy[i]) + bot * fy[i]
    return out


@pytest.mark.parametrize("attention", [None, "se"])
def test_gradcam_equals_a_hand_computation(attention):
    torch.manual_seed(0)
    net = _net(attention=attention)
    net.eval()
    x = torch.rand(3, 64)
    cams, logits = stage_cams(net, x)
    # the same maps by hand: hooks on what the next stage sees (the block's output when attached)
    acts = {}
    for s in (1, 2, 3):
        mod = net.attn[str(s)] if attention else net.stages[s - 1][-1]
        mod.register_forward_hook(lambda m, i, o, s=s: acts.__setitem__(s, o))
    out = net(x.reshape(-1, 1, 8, 8))
    assert torch.equal(out, logits)
    cls = out.argmax(1)
    for s in (1, 2, 3):
        a = acts[s]
        g, = torch.autograd.grad(out.gather(1, cls[:, None]).sum(), a, retain_graph=True)
        for b in range(3):
            A, G = a[b].detach().double().numpy(), g[b].double().numpy()          # [C, h, w]
            alpha = G.mean(axis=(1, 2))                                            # gradient average per channel
            m = np.maximum(np.tensordot(alpha, A, axes=1), 0.0)                   # weighted channel sum, ReLU
            ref = _bilinear(m, 8, 8)
            np.testing.assert_allclose(cams[s][b].double().numpy(), ref, rtol=1e-5, atol=1e-7)
    assert all(cams[s].shape == (3, 8, 8) and (cams[s] >= 0).all() for s in cams)


def test_target_label_maps_the_label():
    net = _net()
    x = torch.rand(2, 64)
    y = torch.tensor([3, 7])
    a, logits = stage_cams(net, x, target=y)
    b, _ = stage_cams(net, x, target=logits.argmax(1))
    if not torch.equal(logits.argmax(1), y):
        assert any(not torch.allclose(a[s], b[s]) for s in a)


def test_removing_a_block_at_test_time_equals_a_network_built_without_it():
    full, part = _net(attach=(1, 2, 3)), _net(attach=(1, 3))
    # the backbone chips are the same (same seed); give the kept blocks the same weights
    part.attn["1"].load_state_dict(full.attn["1"].state_dict())
    part.attn["3"].load_state_dict(full.attn["3"].state_dict())
    full.eval(), part.eval()
    x = torch.rand(5, 1, 8, 8)
    full.attached = {1, 3}
    assert torch.equal(full(x), part(x))
    full.attached = {1, 2, 3}
    assert not torch.equal(full(x), part(x))


def test_map_statistics():
    flat = torch.ones(1, 10, 10)
    assert concentration(flat).item() == pytest.approx(0.1)           # uniform: the top tenth holds a tenth
    one = torch.zeros(1, 10, 10)
    one[0, 3, 4] = 2.0
    assert concentration(one).item() == pytest.approx(1.0)
    assert math.isnan(concentration(torch.zeros(1, 4, 4)).item())
    a = torch.rand(4, 6, 6)
    assert torch.allclose(correlation(a, 2 * a + 1), torch.ones(4))
    assert torch.allclose(correlation(a, -a), -torch.ones(4))
    assert math.isnan(correlation(a[:1], torch.ones(1, 6, 6)).item())


def test_the_ablation_is_off_chip_and_consistent():
    """Counters, random streams and co-processor work are as before; the accuracy without a
    block is the accuracy of the network with that block detached."""
    net = build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    twin = build("sanet-resnet8", device="moderate", coding="rate", input_shape=(1, 8, 8), classes=10)
    x, y = torch.rand(24, 64), torch.randint(0, 10, (24,))
    before = [l.crossbar.counters.as_dict() for l in _layers(net)]
    cp = net.coprocessor.counters.as_dict()
    r = ablation(net, x, y, batch=10)
    assert [l.crossbar.counters.as_dict() for l in _layers(net)] == before
    assert net.coprocessor.counters.as_dict() == cp and net.attached == {1, 2, 3}
    net.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(net(x.reshape(-1, 1, 8, 8)), twin(x.reshape(-1, 1, 8, 8)))   # same noise stream next
    assert set(r["blocks"]) == {1, 2, 3} and r["samples"] == 24
    with off_chip(twin), torch.no_grad():
        twin.attached = {1, 3}
        acc = (twin(x.reshape(-1, 1, 8, 8)).argmax(1) == y).float().mean().item()
    # the ablation read the chip with other noise draws: its accuracy without block 2 is close
    assert abs(r["blocks"][2]["accuracy_without"][0] - acc) <= 0.25
    d = r["blocks"][2]
    assert d["accuracy_drop"][2] == 24 and -1 <= d["correlation"][0] <= 1
    assert 0.1 - 1e-6 <= d["concentration_with"][0] <= 1.0


def _layers(net):
    from neurosal.crossbar import analog_layers
    return analog_layers(net)


def test_gradcam_command(tmp_path, capsys):
    from neurosal.cli import main
    net = build("sanet-resnet8", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10)
    ck = tmp_path / "s.pt"
    save_checkpoint(net, ck)
    png = tmp_path / "g.png"
    assert main(["gradcam", "--network", "sanet-resnet8", "--device", "ideal", "--checkpoint", str(ck),
                 "--samples", "16", "-o", str(png), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "off chip" in out and "block" in out and png.stat().st_size > 10_000
    mlp = tmp_path / "m.pt"
    save_checkpoint(build("mlp-64-100-10", device="ideal", coding="rate", input_shape=(1, 8, 8), classes=10), mlp)
    assert main(["gradcam", "--network", "mlp-64-100-10", "--device", "ideal", "--checkpoint", str(mlp)]) == 2
    assert "Grad-CAM runs on SAnet / ResNet recipes" in capsys.readouterr().err
