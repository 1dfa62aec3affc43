"""Training logs and curves: one row per epoch as it ends, equal to the run's own figures; a
resumed run appends; progress on a terminal is a bar, elsewhere whole lines."""

import csv
import io
import json

import pytest

from neurosal.cli import main
from neurosal.training import train
from neurosal.progress import LineProgress

KW = dict(rule="bp", limit_train=96, limit_test=48, batch=8, progress=False, seed=2)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_the_log_holds_every_epoch_and_ends_at_the_result(tmp_path, suffix):
    log = tmp_path / f"run{suffix}"
    r = train("mlp-64-100-10", "moderate", epochs=3, log=log, **KW)
    text = log.read_text()
    rows = list(csv.DictReader(io.StringIO(text))) if suffix == ".csv" else [json.loads(l) for l in text.splitlines()]
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3]
    for row, h in zip(rows, r["history"]):
        assert float(row["loss"]) == h["loss"] and float(row["test_accuracy"]) == h["test_accuracy"]
    assert int(rows[-1]["pulses"]) == r["pulses"]
    assert float(rows[-1]["energy_j"]) == pytest.approx(r["energy_j"], rel=1e-12, abs=0)
    p = [int(x["pulses"]) for x in rows]
    e = [float(x["energy_j"]) for x in rows]
    assert p == sorted(p) and e == sorted(e) and e[0] > 0          # cumulative


def test_a_resumed_run_appends_and_a_new_one_needs_overwrite(tmp_path):
    log, ck = tmp_path / "l.jsonl", tmp_path / "c.pt"
    train("mlp-64-100-10", "moderate", epochs=1, log=log, out=ck, **KW)
    train("mlp-64-100-10", "moderate", epochs=2, log=log, out=ck, resume=ck, **KW)
    assert [json.loads(l)["epoch"] for l in log.read_text().splitlines()] == [1, 2]
    with pytest.raises(FileExistsError, match="--log .* exists; pass --overwrite"):
        train("mlp-64-100-10", "moderate", epochs=1, log=log, **KW)
    train("mlp-64-100-10", "moderate", epochs=1, log=log, overwrite=True, **KW)
    assert len(log.read_text().splitlines()) == 1
    with pytest.raises(ValueError, match="allowed: a .csv or .jsonl file"):
        train("mlp-64-100-10", "moderate", epochs=1, log=tmp_path / "l.txt", **KW)


def test_train_draws_learning_curves(tmp_path, capsys):
    png = tmp_path / "c.png"
    assert main(["train", "--network", "mlp-64-100-10", "--device", "ideal", "--epochs", "2", "--limit-train", "64",
                 "--limit-test", "32", "-o", str(png), "--threads", "1"]) == 0
    assert png.stat().st_size > 10_000 and f"wrote {png}" in capsys.readouterr().out


def test_progress_off_a_terminal_is_whole_lines():
    out = io.StringIO()
    p = LineProgress(100, desc="train", unit="sample", every=0.0, file=out)
    for _ in range(4):
        p.update(25)
    p.set_postfix(acc="0.9")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5
    assert lines[0].startswith("train: 25/100 sample (25 %)") and lines[-1].endswith("acc=0.9 - done")
    quiet = io.StringIO()
    with LineProgress(10, every=1e9, file=quiet) as q:        # between reports: nothing but the last line
        q.update(10)
    assert len(quiet.getvalue().splitlines()) == 1


def test_tensorboard_is_optional(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="--tensorboard needs the tensorboard package"):
            train("mlp-64-100-10", "ideal", epochs=1, tensorboard=tmp_path / "tb", **KW)
        return
    train("mlp-64-100-10", "ideal", epochs=2, tensorboard=tmp_path / "tb", **KW)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
