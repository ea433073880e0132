"""Long work reports progress off a terminal too: a line at most every `every_s` seconds, and one at the end."""

import io

from sparrow_sd.progress import LineProgress, count_done_before, progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_lines_are_rate_limited_and_say_count_rate_and_time_left():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(10, "datagen rank 0", "sample", every_s=60, stream=out, clock=clock)
    clock.now = 30
    bar.update()
    assert out.getvalue() == ""  # under a minute: nothing yet
    clock.now = 80
    bar.update()
    bar.set_postfix_str("3k visual tokens")
    first = out.getvalue().splitlines()
    assert first == ["datagen rank 0: 2/10 sample (1:20, 40.0 s/sample, 5:20 left)"]
    clock.now = 90
    bar.update(3)
    assert len(out.getvalue().splitlines()) == 1  # 10 s after the last line: still quiet
    bar.close()
    last = out.getvalue().splitlines()[-1]
    assert last == "datagen rank 0: 5/10 sample (1:30, 18.0 s/sample, 1:30 left) 3k visual tokens"
    bar.close()
    assert len(out.getvalue().splitlines()) == 2  # nothing new to say


def test_an_interrupted_short_run_leaves_stderr_to_its_error_line():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(400, "datagen rank 0", "sample", stream=out, clock=clock)
    clock.now = 5
    bar.update(2)
    bar.close()  # stopped at 2 of 400 before any line was due
    assert out.getvalue() == ""


def test_resumed_counts_rate_only_the_new_work_and_fast_work_reads_per_second():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(1000, "train draft", "step", initial=400, every_s=0, stream=out, clock=clock)
    clock.now = 10
    bar.update(100)
    bar.set_postfix(loss="1.234")
    assert bar.line() == "train draft: 500/1000 step (0:10, 10.0 step/s, 0:50 left) loss=1.234"
    unknown = LineProgress(None, "tau", "decode", stream=io.StringIO(), clock=clock)
    assert unknown.line().startswith("tau: 0 decode (")


def test_progress_off_a_terminal_writes_lines_and_disabled_writes_nothing():
    out = io.StringIO()
    bar = progress(3, "bench", "run", stream=out)
    assert isinstance(bar, LineProgress)
    for _ in range(3):
        bar.update()
    bar.close()
    assert out.getvalue().startswith("bench: 3/3 run (")
    quiet = io.StringIO()
    silent = progress(3, "bench", "run", enabled=False, stream=quiet)
    silent.update()
    silent.close()
    assert quiet.getvalue() == ""


def test_work_found_done_on_a_resume_counts_but_does_not_speed_up_the_rate():
    clock, out = Clock(), io.StringIO()
    bar = LineProgress(160, "datagen rank 0", "sample", every_s=60, stream=out, clock=clock)
    count_done_before(bar, 42)  # a resume skipping what the last run wrote
    clock.now = 66
    bar.update(3)
    assert out.getvalue() == "datagen rank 0: 45/160 sample (1:06, 22.0 s/sample, 42:10 left)\n"
