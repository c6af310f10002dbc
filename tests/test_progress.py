"""Progress in a log: a line every LOG_EVERY seconds with the bar's figures, and a last line."""
import io

from discodance.progress import LogProgress, progress_bar


def test_a_log_gets_a_line_every_interval_and_a_last_one():
    now = [0.0]
    out = io.StringIO()
    bar = LogProgress(total=1000, desc="train gumbel-vae", unit="step", file=out, every=30, clock=lambda: now[0])
    for _ in range(1000):       # 1000 steps at 0.25 s each: 250 s
        now[0] += 0.25
        bar.update(1)
        bar.set_postfix(loss="0.0500")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 250 // 30 + 1
    assert lines[-1] == "train gumbel-vae: 1000/1000 steps (100%), 250 s, 4 step/s, loss=0.0500"
    bar.close()
    assert len(out.getvalue().splitlines()) == len(lines)  # closing twice writes nothing more


def test_no_terminal_means_no_bar_and_disabled_means_silence():
    out = io.StringIO()                                                 # not a terminal
    assert isinstance(progress_bar(total=5, file=out), LogProgress)
    assert list(progress_bar(range(3), enabled=False, file=out)) == [0, 1, 2] and out.getvalue() == ""
