"""Progress lines of long loops (the train job's epochs): done/total, rate and time left, by hand."""

from __future__ import annotations

from drawmatch.core.progress import Progress, duration_text, progress_line
from drawmatch.jobs import train
from tests.conftest import tiny_train_config


def test_progress_line_by_hand():
    # 10 of 40 steps in 20 s: 0.5 steps/s, 30 steps left -> 60 s
    assert (
        progress_line("epoch 0", 10, 40, 20.0) == "epoch 0: 10/40 steps, 0.50 steps/s, 1m 00s left"
    )
    assert progress_line("e", 0, 5, 3.0) == "e: 0/5 steps, 0.00 steps/s, ? left"
    assert [duration_text(s) for s in (0, 44.6, 89, 3600 + 5 * 60 + 7)] == [
        "0s",
        "45s",
        "1m 29s",
        "1h 05m",
    ]


def test_progress_prints_every_interval_and_at_the_end():
    now = [0.0]
    lines: list[str] = []
    progress = Progress("p", 5, every_s=30, out=lines.append, clock=lambda: now[0])
    # prints at 32 s (2 done: 3 left at 2/32 per s = 48 s), 72 s (4: 1 at 4/72 = 18 s), 75 s (end)
    for t in (10.0, 32.0, 40.0, 72.0, 75.0):
        now[0] = t
        progress.update()
    assert lines == [
        "p: 2/5 steps, 0.06 steps/s, 48s left",
        "p: 4/5 steps, 0.06 steps/s, 18s left",
        "p: 5/5 steps, 0.07 steps/s, 0s left",
    ]


def test_an_epoch_prints_its_progress_before_its_report(tiny_fold, capsys):
    out, fold_csv = tiny_fold
    trainer = train.Trainer(tiny_train_config(out, fold_csv, "num_workers=1", "epochs=1"))
    trainer.baseline()
    trainer.run_epoch(0)
    printed = capsys.readouterr().out
    assert "embedding the gallery (12 artworks)" in printed
    assert "[rank 0] epoch 0 (pairs): 4/4 steps," in printed and "steps/s, 0s left" in printed
