"""`dmireid train … > log.txt 2>&1` leaves a log a person can read: no bar fragments, periodic lines."""

import os
import re
import subprocess
import sys


def test_redirected_training_log_has_no_control_characters(tmp_path):
    log = tmp_path / "log.txt"
    command = [sys.executable, "-m", "dmireid", "train", "--config", "smoke", "train.epochs=1", "train.iters=5",
               f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path.parent / 'synthetic-smoke'}"]
    with open(log, "w") as handle:
        proc = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text and "\x1b" not in text
    # periodic progress lines instead of bars: iteration, loss, images/s, ETA
    assert re.search(r"epoch 1/1 iteration 5/5 loss \d+\.\d+ [\d.]+ img/s eta \d+:\d\d:\d\d", text), text[-2000:]
    assert "Results after epoch 1" in text
    assert "\r" not in (tmp_path / "run" / "train.log").read_text()


def test_progress_bar_is_silent_off_a_terminal(capsys):
    from dmireid.progress import interactive, progress_bar

    assert not interactive()  # pytest captures stderr
    assert list(progress_bar(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
