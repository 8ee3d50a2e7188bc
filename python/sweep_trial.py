"""The Python side of sweep's exec trainer: one file, no dependencies.

A training script run by `[trainer] kind = "exec"` uses it in two lines:

    trial = sweep_trial.Trial()          # its factors: trial.config["lr"]
    trial.log(step=100, epoch=1, train_loss=0.71)
    trial.final(test_accuracy=0.83)

and, for resume and preemption:

    if trial.resume_step is not None: load(trial.checkpoint_path(trial.resume_step))
    if trial.checkpoint(step):            # only on "ok"
        save(trial.checkpoint_path(step))
        trial.checkpointed(step)          # on disk: a later attempt may resume here
    if trial.should_stop: ...             # SIGTERM arrived: checkpoint (still "ok"
                                          # on a shutdown) and exit 0

Outside a sweep (no SWEEP_METRICS_SOCKET) it reads nothing and prints the
lines instead, so the script runs by hand too.

Exit codes: 0 success; HAND_BACK (75) hands the trial back without using
an attempt; anything else fails the attempt.
"""

import json
import math
import os
import signal
import socket

HAND_BACK = 75

__all__ = ["Trial", "HAND_BACK"]


def _value(x):
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


class Trial:
    """One trial of a sweep, as the worker describes it."""

    def __init__(self):
        path = os.environ.get("SWEEP_TRIAL_CONFIG")
        spec = {}
        if path:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
        self.trial_id = spec.get("trial_id", "local")
        self.seed = int(spec.get("seed", os.environ.get("SWEEP_SEED", 0)))
        self.attempt = spec.get("attempt", 1)
        self.factors = spec.get("factors", {})
        self.settings = spec.get("settings", {})
        self.config = spec.get("config", {})
        self.checkpoint_dir = os.environ.get("SWEEP_CHECKPOINT_DIR", "checkpoints")
        step = os.environ.get("SWEEP_RESUME_STEP")
        self.resume_step = int(step) if step not in (None, "") else None
        self._confirmed = self.resume_step
        self.device = os.environ.get("SWEEP_DEVICE", "cpu")
        self.should_stop = False
        # SIGTERM (preemption, cancel, timeout) sets should_stop: poll it
        # between steps, checkpoint, and exit. A script that never polls it
        # is killed when the worker's grace period ends.
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._sock = None
        self._reader = None
        where = os.environ.get("SWEEP_METRICS_SOCKET")
        if where:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.connect(where)
            self._reader = self._sock.makefile("r", encoding="utf-8")

    def _on_sigterm(self, signum, frame):
        self.should_stop = True

    def _send(self, obj):
        line = json.dumps(obj, allow_nan=False) + "\n"
        if self._sock is None:
            print("[sweep]", line, end="", flush=True)
        else:
            self._sock.sendall(line.encode("utf-8"))

    def log(self, step=None, epoch=None, **metrics):
        """Metric values at a step (a NaN or infinite value: the trial diverged)."""
        obj = {k: _value(v) for k, v in metrics.items()}
        if step is not None:
            obj["step"] = int(step)
        if epoch is not None:
            obj["epoch"] = int(epoch)
        self._send(obj)

    def final(self, **metrics):
        """The trial's result, e.g. final(test_accuracy=0.83)."""
        self._send({"final": {k: _value(v) for k, v in metrics.items()}})

    def checkpoint(self, step):
        """Asks whether a checkpoint at `step` may be written: True once every
        value logged so far is stored and the coordinator vouches for this
        step; False when the trial is no longer this worker's (write nothing)."""
        self._prune()
        self._send({"checkpoint": int(step)})
        if self._reader is None:
            return True
        return self._reader.readline().strip() == "ok"

    def _prune(self):
        # Only checkpoints older than the newest one written and confirmed
        # go: that one is what a later attempt resumes from (a newer folder
        # may be one whose writing was cut short).
        if self._confirmed is None:
            return
        try:
            names = [n for n in os.listdir(self.checkpoint_dir) if n.startswith("step-")]
        except OSError:
            return
        for name in names:
            try:
                step = int(name[len("step-"):])
            except ValueError:
                continue
            if step < self._confirmed:
                folder = os.path.join(self.checkpoint_dir, name)
                for f in os.listdir(folder):
                    os.remove(os.path.join(folder, f))
                os.rmdir(folder)

    def checkpointed(self, step):
        """Says the checkpoint of `step` is written (all its files on disk).
        Only such a checkpoint is resumed from: one whose writing was cut
        short never is."""
        self._send({"checkpointed": int(step)})
        self._confirmed = int(step)

    def checkpoint_path(self, step, name="checkpoint.pt"):
        """Where the checkpoint of `step` goes (one folder per step)."""
        folder = os.path.join(self.checkpoint_dir, "step-%012d" % int(step))
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, name)
