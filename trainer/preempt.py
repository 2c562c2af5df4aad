"""Preemption: save an intra-round checkpoint and stop when the cluster is about to take the job away.

Slurm sends the batch script USR1 `slurm.signal_seconds` before the time limit (or before a
preemption). Signals do not travel reliably through `srun` -> `torchrun`/`deepspeed` -> workers, so the
batch script's trap touches a flag file named by `FLYWHEEL_PREEMPT_FLAG`; a SIGUSR1 delivered straight
to a worker (a job without a launcher) sets the same flag. `PreemptCallback` checks the flag at every
optimizer step end, agrees on it across ranks (all ranks must stop at the same step, or the next
collective hangs), and asks the HF Trainer to save a checkpoint and stop. `raise_if_preempted` then
ends the process with `PREEMPTED_EXIT` instead of letting the round finish as if it were complete;
the requeued job resumes from that `checkpoint-*` in the round's work directory.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

FLAG_ENV = "FLYWHEEL_PREEMPT_FLAG"
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: try again later

_signalled = threading.Event()


class Preempted(SystemExit):
    """The round stopped at a saved checkpoint because the job is being preempted or timed out."""

    def __init__(self, step: int):
        print(f"flywheel: preempted: checkpoint saved at step {step}; the requeued job resumes from it",
              file=sys.stderr, flush=True)
        super().__init__(PREEMPTED_EXIT)


def _on_usr1(signum, frame) -> None:
    _signalled.set()


def install_signal_handler() -> None:
    """SIGUSR1 sets the preemption flag (only the main thread may install handlers)."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _on_usr1)


def requested_here() -> bool:
    """This process saw the warning: a SIGUSR1, or the batch script's flag file."""
    if _signalled.is_set():
        return True
    flag = os.environ.get(FLAG_ENV)
    return bool(flag) and Path(flag).exists()


def requested_anywhere() -> bool:
    """True on every rank when any rank saw the warning (one all-reduce of a single number)."""
    import torch
    import torch.distributed as dist

    local = requested_here()
    if not (dist.is_available() and dist.is_initialized()):
        return local
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def preempt_callback():
    """A TrainerCallback that saves a checkpoint and stops training once preemption is requested."""
    from transformers import TrainerCallback

    class PreemptCallback(TrainerCallback):
        def __init__(self):
            self.stopped_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            install_signal_handler()

        def on_step_end(self, args, state, control, **kwargs):
            if self.stopped_at is None and requested_anywhere():
                self.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
            return control

    return PreemptCallback()


def raise_if_preempted(callback) -> None:
    """After `trainer.train()` returned: end the process if it returned because of preemption."""
    if getattr(callback, "stopped_at", None) is not None:
        raise Preempted(callback.stopped_at)
