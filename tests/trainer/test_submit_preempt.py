"""The preemption path of a Slurm training job: the warning (flag file from the batch script's USR1
trap, or SIGUSR1 to the process) makes the trainer save a checkpoint and stop, and the round ends
with PREEMPTED_EXIT instead of being finalized."""
from __future__ import annotations

import os
import signal

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from trainer import preempt


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(preempt.FLAG_ENV, raising=False)
    preempt._signalled.clear()
    yield
    preempt._signalled.clear()


def _step(callback, step: int) -> TrainerControl:
    state = TrainerState()
    state.global_step = step
    control = TrainerControl()
    callback.on_step_end(TrainingArguments(output_dir="/tmp/unused", report_to="none"), state, control)
    return control


def test_flag_file_makes_the_trainer_save_and_stop(tmp_path, monkeypatch):
    flag = tmp_path / "preempt" / "train-round-0001.42"
    monkeypatch.setenv(preempt.FLAG_ENV, str(flag))
    cb = preempt.preempt_callback()
    control = _step(cb, 3)
    assert not control.should_save and not control.should_training_stop
    preempt.raise_if_preempted(cb)  # no warning yet: training finished normally, nothing raised
    flag.parent.mkdir()
    flag.touch()
    control = _step(cb, 4)
    assert control.should_save and control.should_training_stop
    with pytest.raises(SystemExit) as e:
        preempt.raise_if_preempted(cb)
    assert e.value.code == preempt.PREEMPTED_EXIT


def test_sigusr1_to_the_process_sets_the_flag():
    old = signal.getsignal(signal.SIGUSR1)
    try:
        preempt.install_signal_handler()
        assert not preempt.requested_here()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preempt.requested_here() and preempt.requested_anywhere()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_stop_step_is_the_first_warned_step():
    cb = preempt.preempt_callback()
    preempt._signalled.set()
    _step(cb, 7)
    _step(cb, 8)
    assert cb.stopped_at == 7
