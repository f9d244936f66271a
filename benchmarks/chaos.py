"""Kill -9 chaos: searches and dataset builds survive SIGKILL at any moment.

pianotx promises that a crash costs nothing. ``pianotx search`` killed at any moment
resumes with the same command and ends with exactly one complete MLflow run per Keras
Tuner trial; ``pianotx data build`` leaves the previous dataset or the new one, never a
partial one, and no worker process behind. This script puts the promise to the test on a
tiny dataset and search it makes itself in a temporary folder (private SQLite store).

Build: ``data build --workers 2`` rebuilds a dataset (alternating the chunk length, so
there is always an old dataset to replace) and is killed during the final swap (an audit
hook holds the process there for a moment), while workers process pieces, while shards
are written, or at a random time. After each kill the folder must hold the old dataset
or the complete new one (manifest present, every shard it lists loading), every worker
must be gone within a few seconds, and the same command again must build the new dataset
and leave no ``.NAME.tmp-*`` or ``.NAME.old-*`` behind.

Search: the command is killed at seeded moments, most found by watching the store and
Keras Tuner's folder: while the new store is made, just after the search's own run is
created and before Keras Tuner's state was first written (the first kills), just after a
trial's run is created, during an epoch, while a trial's model is logged, just after a
trial's run turns FINISHED (before Keras Tuner's trial.json says COMPLETED), between
Keras Tuner's writes of a new or COMPLETED trial's trial.json and of the oracle state (a
wrapper of Keras Tuner's oracle holds the process there), while the best model is
registered (the last kill); the rest at random times. After each kill the same command
runs again (and is killed in its turn); the last one finishes the search. A kill is
survived when the store is consistent right after it (each trial at most one complete
run, hyperparameters as first drawn), the next command does not crash, the runs the kill
left open are closed once a later command resumes, and, for the last kill, every final
check passes: each trial one complete run with the hyperparameters Keras Tuner first
drew for it, no run left RUNNING, the search's run holding its setup, and
``models:/piano/Production`` is the best trial's model (promoted with ``--promote
always`` over the bundled model, registered first as champion), registered once, and
transcribes a clip.

A kill counts only when it landed in the phase it names. Each command marks when its
start-up is over (Python's and pianotx's imports done, the build or search running);
no kill is made before, and one that lands before all the same (the process replacing
itself, say) is discarded: "landed before start-up". After a kill the phase it landed in
is read from the command's markers, the store and the folders; a kill planned for one
moment that landed in another is discarded too ("landed in epoch, not run_created"). A
random kill counts in whatever phase it landed after start-up.

    python benchmarks/chaos.py [--kills 10] [--build-kills 5] [--seed 0] [--keep]

The closing lines give the kills made, how many landed in their phase (counted) and
which were discarded and why; the last reads ``kills survived / kills counted: X/Y``.
The exit status is 1 when a kill made (counted or not) left a problem, a command failed
by itself or a final check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import pianotx
from pianotx.locations import Store
from pianotx.midi import Notes, write_midi

SEARCH = "chaos"  # the search's name: its experiment and its Keras Tuner project
SR = 16000
PIECES = 10  # six-second pieces in the dataset
POLL = 0.005  # seconds between looks at the store and the folders
ORPHAN_GRACE = 5.0  # seconds a killed process's children get to end
ROUND_LIMIT = 900.0  # seconds a command may run before it is taken for hung
TRIAL_TAG, MODEL_URI_TAG, OBJECTIVE_METRIC = "pianotx.trial_id", "pianotx.model_uri", "trial_objective"
PENDING = 1  # MLflow's LoggedModelStatus.PENDING in its SQL store
SEARCH_MOMENTS = ("run_created", "epoch", "model_logging", "run_finished", "state_write")
BUILD_MOMENTS = ("workers", "gather")
SPACE = """\
name: {name}
tuner: {{type: random, max_trials: {trials}, seed: {seed}}}
hyperparameters:
  learning_rate: {{type: choice, values: [1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3]}}
  dense_units: {{type: choice, values: [8, 16]}}
fixed: {{epochs: {epochs}, lstm_units: 8, recurrent_dropout: 0.0, batch_size: 4}}
"""
# Every command starts as `python -c STARTUP_HOOK [HOOK] RUN_CLI ...`: once the command
# itself runs (Python's and pianotx's imports done, its build or search function called)
# the process writes the file CHAOS_STARTED_MARKER; it removes it when it replaces itself
# with a fresh process (os.exec, a search's fresh process every few trials), whose
# imports are start-up again. No kill is made before the file is there, and a kill that
# lands while it is missing tests nothing: it is not counted (see :func:`discard_reason`).
STARTUP_HOOK = """
import os, sys
STARTED = os.environ["CHAOS_STARTED_MARKER"]
def _started(function):
    def marked(*args, **kwargs):
        with open(STARTED, "w") as marker:
            marker.write(function.__name__)
        return function(*args, **kwargs)
    return marked
def _restarting(event, args):
    if event == "os.exec":
        try:
            os.unlink(STARTED)
        except OSError:
            pass
sys.addaudithook(_restarting)
import pianotx.build, pianotx.tuning.command
pianotx.build.build_dataset = _started(pianotx.build.build_dataset)
pianotx.tuning.command.search_command = _started(pianotx.tuning.command.search_command)
"""
RUN_CLI = """
import runpy
runpy.run_module("pianotx.cli", run_name="__main__", alter_sys=True)
"""
# With SWAP_HOOK, `data build ...`: the build pauses inside its final swap
# and says where in a marker file, so that a kill can land exactly there: between two
# renames (the old dataset moved aside, the new one not yet in place), or after the new
# one moved in, while the old one (under a hidden name of this process) is removed.
SWAP_HOOK = """
import os, sys, time
OUT = os.environ["CHAOS_SWAP_TARGET"]
MINE = os.path.join(os.path.dirname(OUT), "." + os.path.basename(OUT) + ".")
def _pause_in_swap(event, args):
    path = os.fspath(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else ""
    if event == "os.rename" and os.fspath(args[1]) == OUT:
        where = "between its two renames (the old dataset moved aside, the new one not in place)"
    elif (event == "shutil.rmtree" and path.startswith(MINE) and path.endswith(f"-{os.getpid()}")
          and os.path.isfile(os.path.join(path, "manifest.json"))
          and os.path.isfile(os.path.join(OUT, "manifest.json"))):
        where = "after the new dataset moved in, while the old one was removed"
    else:
        return
    with open(os.environ["CHAOS_SWAP_MARKER"], "w") as marker:
        marker.write(where)
    time.sleep(float(os.environ["CHAOS_SWAP_PAUSE"]))
sys.addaudithook(_pause_in_swap)
"""
# With STATE_HOOK, `search ...`: Keras Tuner writes a trial's trial.json and
# then the oracle state that names it ongoing (a new trial) or done (a COMPLETED one);
# the search pauses between the two (for the status CHAOS_STATE_STATUS) and says so in a
# marker file, so that a kill can land in between. The wrappers only note and wait.
STATE_HOOK = """
import os, time
from keras_tuner.src.engine import oracle as _oracle
_save_trial, _save = _oracle.Oracle._save_trial, _oracle.Oracle.save
last = []
def _save_trial_noted(self, trial):
    _save_trial(self, trial)
    last[:] = [trial.trial_id, str(trial.status)]
def _save_paused(self):
    if last and last[1] == os.environ["CHAOS_STATE_STATUS"]:
        kind = "new" if last[1] == "RUNNING" else last[1]
        with open(os.environ["CHAOS_STATE_MARKER"], "w") as marker:
            marker.write(f"Keras Tuner wrote {kind} trial {last[0]}'s trial.json, not yet the oracle state")
        time.sleep(float(os.environ["CHAOS_STATE_PAUSE"]))
    last[:] = []
    return _save(self)
_oracle.Oracle._save_trial, _oracle.Oracle.save = _save_trial_noted, _save_paused
"""


# ---------------------------------------------------------------- set-up


def melody(rng: np.random.Generator, seconds: float) -> Notes:
    """Random notes and chords (1-3 keys, MIDI 40..89) filling ``seconds``."""
    intervals, pitches = [], []
    t = 0.2
    while t < seconds - 0.6:
        duration = float(rng.choice([0.25, 0.5, 0.75]))
        for pitch in rng.choice(np.arange(40, 90), size=int(rng.integers(1, 4)), replace=False):
            intervals.append((t, t + duration))
            pitches.append(int(pitch))
        t += duration + float(rng.choice([0.0, 0.1, 0.3]))
    return Notes.from_lists(intervals, pitches, rng.integers(50, 110, len(pitches)))


def synth(notes: Notes, seconds: float) -> np.ndarray:
    """(seconds * SR,) float32: a decaying four-harmonic tone per note."""
    out = np.zeros(int(seconds * SR), np.float32)
    for (start, end), pitch, velocity in zip(notes.intervals, notes.pitches, notes.velocities):
        a, b = int(start * SR), min(int(end * SR), len(out))
        t = np.arange(b - a) / SR
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 5) if f0 * h < SR / 2)
        out[a:b] += (velocity / 127) * 0.2 * np.exp(-1.5 * t) * tone
    return out


def write_piece(folder: Path, name: str, rng: np.random.Generator, seconds: float) -> Path:
    """``name.wav`` (16 kHz) and ``name.mid`` of a random melody; the wav's path."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    notes = melody(rng, seconds)
    sf.write(folder / f"{name}.wav", synth(notes, seconds + 0.5), SR)
    write_midi(notes, folder / f"{name}.mid")
    return folder / f"{name}.wav"


@dataclass(frozen=True)
class Setup:
    """The temporary world of one chaos run."""

    root: Path
    pairs: Path  # PIECES (wav, mid) pairs
    dataset: Path  # built by the build chaos, then searched
    store: Store  # private SQLite store
    space: Path
    clip: Path  # a short generated recording to transcribe at the end
    trials: int
    epochs: int

    @property
    def project(self) -> Path:
        """Keras Tuner's folder of the search (beside the store, as pianotx puts it)."""
        assert self.store.local_path is not None
        return self.store.local_path.parent / "keras-tuner" / SEARCH


def set_up(root: Path, seed: int, trials: int, epochs: int) -> Setup:
    rng = np.random.default_rng(seed)
    for i in range(PIECES):
        write_piece(root / "pairs", f"piece{i}", rng, 6.0)
    clip = write_piece(root / "clip", "clip", rng, 3.0)
    (root / "mlruns").mkdir()
    store = Store(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", (root / "mlruns" / "artifacts").as_uri())
    space = root / f"{SEARCH}.yaml"
    space.write_text(SPACE.format(name=SEARCH, trials=trials, seed=seed, epochs=epochs))
    (root / "logs").mkdir()
    return Setup(root, root / "pairs", root / "dataset", store, space, clip, trials, epochs)


# ---------------------------------------------------------------- killing


def child_code(hook: str = "") -> str:
    """The code a command runs as (``python -c CODE ARGS``): pianotx's command line with
    the start-up marker (STARTUP_HOOK) and ``hook``."""
    return STARTUP_HOOK + hook + RUN_CLI


def child_env() -> dict[str, str]:
    """This process's environment, with the pianotx it imports first on the path."""
    repo = str(Path(pianotx.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{path}" if path else repo, "TF_CPP_MIN_LOG_LEVEL": "2"}


@dataclass
class Outcome:
    """How one command ended."""

    moment: str | None  # what the kill hit; None: the command ended by itself
    rc: int  # exit status (-9 when killed)
    seconds: float
    orphans: list[int] = field(default_factory=list)  # children still alive after the grace time
    log: Path | None = None
    hung: bool = False  # ran past ROUND_LIMIT and was killed
    started: bool = True  # the command had passed start-up (imports) when it was killed
    landed: str | None = None  # the phase the kill landed in (one of PHASES' names), where known

    @property
    def failed(self) -> bool:
        """Ended with an error (or hung), not by a planned kill."""
        return self.moment is None and self.rc != 0

    def failure(self) -> str:
        """Why it failed: pianotx's one-line error where it printed one, else its output's end."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log else []
        errors = [line for line in lines if line.startswith("error:")]
        return "hung" if self.hung else f"exit {self.rc}: {errors[-1] if errors else self.tail(3)}"

    def tail(self, lines: int = 6) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines() if self.log else []
        return " | ".join(text[-lines:])


Trigger = Callable[[psutil.Process, float], "str | None"]


def run_command(cmd: Sequence[str], trigger: Trigger | None, log: Path, env: dict[str, str], cwd: Path) -> Outcome:
    """Run ``cmd``; SIGKILL it when ``trigger`` names a moment (given the process and the
    seconds since start), else let it end. ``trigger`` is asked only once the command has
    passed start-up (the file ``env["CHAOS_STARTED_MARKER"]`` exists, see STARTUP_HOOK)."""
    started = Path(env["CHAOS_STARTED_MARKER"])
    started.unlink(missing_ok=True)
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    watched = psutil.Process(proc.pid)
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            moment = trigger(watched, elapsed) if trigger and started.exists() else None
            if moment is not None or elapsed > ROUND_LIMIT:
                rc, orphans = kill(proc, watched)
                # read once the process is dead: whether the kill landed after start-up
                return Outcome(moment, rc, elapsed, orphans, log, hung=moment is None, started=started.exists())
            time.sleep(POLL)
    except BaseException:
        proc.kill()
        raise
    return Outcome(None, proc.returncode, time.monotonic() - start, log=log)


def kill(proc: subprocess.Popen, watched: psutil.Process) -> tuple[int, list[int]]:
    """SIGKILL the process (it alone); its exit status and the pids of its children that
    outlived it by ORPHAN_GRACE seconds (those are then ended here)."""
    try:
        children = watched.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=ORPHAN_GRACE)
    for child in alive:
        child.kill()
    return proc.returncode, [c.pid for c in alive]


# ---------------------------------------------------------------- build chaos


def build_command(setup: Setup, chunk_frames: int, hook: bool) -> list[str]:
    code = child_code(SWAP_HOOK if hook else "")
    return [sys.executable, "-c", code, "data", "build", str(setup.pairs), str(setup.dataset), "--workers", "2",
            "--chunk-frames", str(chunk_frames)]  # fmt: skip


def dataset_problems(out: Path, allowed: dict[int, str]) -> list[str]:
    """Why ``out`` is not a complete dataset of one of the ``allowed`` chunk lengths
    (chunk_frames -> what that dataset is, for the message); [] when it is."""
    from pianotx.store import ARRAYS, SPLITS, load_manifest

    try:
        manifest = load_manifest(out)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return [str(exc)]
    if manifest.chunk_frames not in allowed:
        return [
            f"{out} holds a dataset of chunk length {manifest.chunk_frames}, neither {' nor '.join(allowed.values())}"
        ]
    problems = []
    for split in SPLITS:
        info = manifest.data["splits"][split]
        for shard in info["shards"]:
            for key in ARRAYS:
                path = out / split / f"{key}-{shard['index']:03d}.npy"
                try:
                    if len(np.load(path)) != shard["chunks"]:
                        problems.append(f"{path}: not {shard['chunks']} chunks")
                except (OSError, ValueError) as exc:
                    problems.append(f"{path}: {exc}")
        try:
            np.load(out / split / "notes.npz").close()
        except (OSError, ValueError) as exc:
            problems.append(f"{out / split / 'notes.npz'}: {exc}")
    return problems


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*-*"))


class BuildTrigger:
    """When to kill one build: "swap", one of BUILD_MOMENTS, or "random"."""

    def __init__(self, moment: str, out: Path, marker: Path, rng: random.Random, seconds: float):
        """``seconds``: how long a whole build takes (random kills land within it)."""
        self.moment, self.out, self.marker = moment, out, marker
        self.delay = rng.uniform(0.05, 0.95) * seconds
        self.pieces = rng.randint(1, PIECES - 2)  # "workers": pieces done when it fires
        self.landed: str | None = None  # the phase the build was in when the kill was ordered

    def __call__(self, proc: psutil.Process, elapsed: float) -> str | None:
        tmp = self.out.parent / f".{self.out.name}.tmp-{proc.pid}"
        # the phase as the build's files show it, a poll (POLL seconds) before the kill
        phase, words = build_phase(tmp)
        if self.moment == "swap":
            where = self.marker.read_text() if self.marker.exists() else ""
            # the build wrote the marker inside the swap and waits there: the kill lands in it
            return self._fire("swap", f"during the final swap, {where}") if where else None
        if self.moment == "gather":
            return self._fire(phase, "while the split shards were written") if (tmp / "train").exists() else None
        if self.moment == "workers":
            done = len(list((tmp / "pieces").glob("*.npz"))) if (tmp / "pieces").is_dir() else 0
            workers = len(proc.children()) if done >= self.pieces else 0
            return (
                self._fire(phase, f"while {workers} workers processed pieces ({done} of {PIECES} done)")
                if workers
                else None
            )
        return self._fire(phase, f"at random ({words})") if elapsed >= self.delay else None

    def _fire(self, phase: str, words: str) -> str:
        self.landed = phase
        return words


def build_phase(tmp: Path) -> tuple[str, str]:
    """(phase, in words) of a build whose temporary folder is ``tmp``: "swap" (manifest
    written), "gather" (shards being written), "workers" (pieces being processed) or
    "preparing" (before any of these)."""
    if (tmp / "manifest.json").exists():
        return "swap", "manifest written, swapping"
    if (tmp / "train").exists():
        return "gather", "writing shards"
    if (tmp / "pieces").is_dir():
        return "workers", f"processing pieces, {len(list((tmp / 'pieces').glob('*.npz')))} done"
    return "preparing", "preparing"


# Where a kill planned for a moment may land and still test it, besides the phase of the
# same name: "before_state" (Keras Tuner's state not yet written) holds just after the
# search's run was created too. A "random" kill tests whatever phase it lands in.
ALSO_LANDS_IN = {"before_state": {"search_created"}}


def discard_reason(planned: str, started: bool, landed: str | None) -> str | None:
    """Why a kill planned for moment ``planned`` does not count, given whether the command
    had passed start-up (imports done, its command running) and the phase the kill landed
    in (None: unknown); None when it counts: it landed in the phase it names (any phase,
    for a "random" kill) after start-up."""
    if not started:
        return "landed before start-up"
    if planned == "random" or landed == planned or landed in ALSO_LANDS_IN.get(planned, ()):
        return None
    return f"landed in {landed or 'an unknown phase'}, not {planned}"


@dataclass
class KillReport:
    kind: str  # "search" or "build"
    number: int
    planned: str
    outcome: Outcome
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def made(self) -> bool:
        return self.outcome.rc == -signal.SIGKILL and self.outcome.moment is not None

    @property
    def discarded(self) -> str | None:
        """Why this kill, made, tested nothing it planned to (None: it counts)."""
        return discard_reason(self.planned, self.outcome.started, self.outcome.landed) if self.made else None

    @property
    def counted(self) -> bool:
        return self.made and self.discarded is None

    @property
    def survived(self) -> bool:
        return self.counted and not self.problems

    def line(self, total: int) -> str:
        verdict = "survived" if not self.problems else "NOT SURVIVED: " + "; ".join(self.problems)
        if not self.made:
            verdict = "no kill made"
        elif self.discarded:
            verdict = f"{self.discarded}: not counted" + ("" if not self.problems else f" ({verdict})")
        extra = f" ({'; '.join(self.notes)})" if self.notes and self.survived else ""
        when = f"{self.outcome.moment}, {self.outcome.seconds:.1f} s in"
        return f"{self.kind} kill {self.number}/{total} [{self.planned}] {when} -> {verdict}{extra}"


def build_chaos(
    setup: Setup, kills: int, rng: random.Random, say: Callable[[str], None]
) -> tuple[list[KillReport], list[str]]:
    """Kill ``data build`` ``kills`` times (the swap first); leaves a complete dataset.

    Returns:
        The kills, and the builds that failed by themselves."""
    env, marker = child_env(), setup.root / "swap-reached"
    env.update(CHAOS_SWAP_TARGET=str(setup.dataset), CHAOS_SWAP_MARKER=str(marker), CHAOS_SWAP_PAUSE="3",
               CHAOS_STARTED_MARKER=str(setup.root / "started"))  # fmt: skip
    first = run_command(build_command(setup, 64, False), None, setup.root / "logs" / "build-0.log", env, setup.root)
    if first.rc != 0:
        raise SystemExit(f"the first build failed: {first.failure()}")
    failures = []
    rest = list(BUILD_MOMENTS) + ["random"] * max(0, kills - 1 - len(BUILD_MOMENTS))
    rng.shuffle(rest)
    reports = []
    for number, moment in enumerate((["swap"] + rest)[:kills], 1):
        marker.unlink(missing_ok=True)
        old = load_chunk_frames(setup.dataset) or 48
        new = 112 - old  # 64 <-> 48: every build replaces a dataset
        cmd = build_command(setup, new, moment == "swap")
        log = setup.root / "logs" / f"build-{number}.log"
        trigger = BuildTrigger(moment, setup.dataset, marker, rng, first.seconds)
        earlier = set(leftovers(setup.dataset))  # blamed on the kill that left them
        outcome = run_command(cmd, trigger, log, env, setup.root)
        outcome.landed = trigger.landed
        report = KillReport("build", number, moment, outcome)
        if outcome.failed:
            failures.append(f"build {number} failed ({outcome.failure()})")
        if outcome.moment is None:
            outcome.moment = "not hit: the build ended first"
        else:
            check_killed_build(setup, report, (old, new), env, earlier)
        reports.append(report)
        say(report.line(kills))
    return reports, failures


def check_killed_build(
    setup: Setup, report: KillReport, chunks: tuple[int, int], env: dict[str, str], earlier: set[str]
) -> None:
    """After a killed build: the old or the new dataset (chunk lengths ``chunks``), no
    orphan, and a clean rebuild that leaves nothing beside the dataset (but ``earlier``)."""
    out, (old, new) = setup.dataset, chunks
    if report.outcome.orphans:
        report.problems.append(f"orphan workers {report.outcome.orphans} alive {ORPHAN_GRACE:.0f} s after the kill")
    if not out.exists():
        report.problems.append(f"{out} is gone (the old dataset is lost; beside it: {', '.join(leftovers(out))})")
    else:
        report.problems += dataset_problems(out, {old: "the old dataset", new: "the new one"})
        kept = load_chunk_frames(out)
        report.notes.append("left the new dataset" if kept == new else "left the old dataset")
    again = run_command(build_command(setup, new, False), None, setup.root / "logs" / f"build-{report.number}b.log",
                        env, setup.root)  # fmt: skip
    if again.rc != 0:
        report.problems.append(f"the next build failed ({again.failure()})")
        return
    report.problems += dataset_problems(out, {new: "the new dataset"})
    left = sorted(set(leftovers(out)) - earlier)
    if left:
        report.problems.append(f"left behind after the next build: {', '.join(left)}")


def load_chunk_frames(out: Path) -> int | None:
    try:
        return int(json.loads((out / "manifest.json").read_text())["config"]["chunks"]["chunk_frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- search: watching


@dataclass(frozen=True)
class RunRow:
    """A trial run as the watcher reads it from the SQLite store."""

    run_id: str
    trial: str
    status: str
    epoch: int | None  # last epoch logged (MLflow step of "loss")
    tagged: bool  # has pianotx.model_uri
    scored: bool  # has its trial_objective metric
    model_status: int | None  # its logged model's status (1 PENDING, 2 READY)


# Read straight from MLflow's SQL schema: a query takes ~1 ms, fast enough to catch the
# short windows between two writes of a search.
RUNS_SQL = f"""
SELECT r.run_uuid, t.value, r.status,
  (SELECT step FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'loss'),
  EXISTS (SELECT 1 FROM tags u WHERE u.run_uuid = r.run_uuid AND u.key = '{MODEL_URI_TAG}'),
  EXISTS (SELECT 1 FROM latest_metrics o WHERE o.run_uuid = r.run_uuid AND o.key = '{OBJECTIVE_METRIC}'),
  (SELECT status FROM logged_models l WHERE l.source_run_id = r.run_uuid
   ORDER BY l.creation_timestamp_ms DESC LIMIT 1)
FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = '{TRIAL_TAG}'
ORDER BY r.start_time, r.run_uuid
"""
SEARCH_PARAMS_SQL = """
SELECT (SELECT count(*) FROM params p WHERE p.run_uuid = r.run_uuid) FROM runs r
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'pianotx_kind' AND t.value = 'search'
"""
SEARCH_DONE_SQL = """
SELECT 1 FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'pianotx_kind' AND t.value = 'search'
WHERE r.status = 'FINISHED' AND EXISTS (SELECT 1 FROM tags b WHERE b.run_uuid = r.run_uuid AND b.key = 'best_model_uri')
"""


def trial_rows(setup: Setup) -> list[RunRow]:
    """Every trial run in the store, oldest first ([] while the store is being made)."""
    return [RunRow(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6]) for r in query(setup, RUNS_SQL)]


def query(setup: Setup, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query of the store ([] while it is missing or being made)."""
    db = setup.store.local_path
    if db is None or not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2, isolation_level=None)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return []


def search_run_done(setup: Setup) -> bool:
    """Whether the search's own run is FINISHED with its best model named (registering next)."""
    return bool(query(setup, SEARCH_DONE_SQL))


def search_run_params(setup: Setup) -> int | None:
    """How many params the search's own run holds (None: no such run yet)."""
    rows = query(setup, SEARCH_PARAMS_SQL)
    return int(rows[0][0]) if rows else None


def store_tables(setup: Setup) -> str:
    """How far the store's files have come: tables in mlflow.db and in temporary stores."""
    db = setup.store.local_path
    assert db is not None
    found = []
    for path in [db, *sorted(db.parent.glob(f".{db.name}.tmp-*"))]:
        if path.is_file() and not path.name.endswith("-journal"):
            try:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
                    n = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
                found.append(f"{path.name}: {n} tables")
            except sqlite3.Error as exc:  # a hot journal: a read-only look cannot roll it back
                found.append(f"{path.name}: mid-transaction ({exc})")
    return ", ".join(found) or "no store yet"


def registry_state(setup: Setup) -> str:
    versions = query(setup, "SELECT version, current_stage FROM model_versions WHERE name = 'piano'")
    return ", ".join(f"version {v} {stage}" for v, stage in versions) or "no version yet"


def read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, why) for a file that is missing or not valid JSON."""
    try:
        return json.loads(path.read_text()), None
    except OSError:
        return None, "missing"
    except ValueError as exc:
        return None, f"unreadable ({exc})"


def trial_status(setup: Setup, trial: str) -> str:
    """What Keras Tuner's trial.json says of ``trial`` (or why it says nothing)."""
    data, why = read_json(setup.project / f"trial_{trial}" / "trial.json")
    return data.get("status", "?") if data else str(why)


def describe(setup: Setup, row: RunRow) -> str:
    """Where trial ``row`` stood, in words, with Keras Tuner's view of it."""
    if row.status == "FINISHED" and not row.tagged:
        state = "run FINISHED before its model was tagged"
    elif row.status == "FINISHED":
        state = "run FINISHED, complete" if row.scored else "run FINISHED before its objective was logged"
    elif row.status != "RUNNING":
        state = f"run {row.status}"
    elif row.model_status == PENDING:
        state = "while its model was logged (logged model PENDING)"
    elif row.tagged:
        state = "model logged and tagged, run not FINISHED yet"
    elif row.model_status is not None:
        state = "model logged, run not tagged yet"
    elif row.epoch is None:
        state = "run created, before its first epoch ended"
    elif row.epoch < setup.epochs:
        state = f"during epoch {row.epoch + 1} of {setup.epochs}"
    else:
        state = "after its last epoch, scoring before logging its model"
    return f"trial {row.trial}: {state} (trial.json {trial_status(setup, row.trial)})"


def recover(setup: Setup) -> None:
    """Let SQLite roll back a write a killed process left half done (a hot journal), as
    the next process to open the store would; read-only queries fail until then."""
    db = setup.store.local_path
    if db is not None and db.is_file():
        with contextlib.closing(sqlite3.connect(db, timeout=5.0)) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchall()


def trial_phase(row: RunRow, epochs: int, trial_json: str) -> str:
    """The phase of a search that stood at trial run ``row`` (of ``epochs`` epochs; its
    trial.json's status ``trial_json``): "run_created" (before its first epoch ended),
    "epoch" (during a later one), "scoring", "model_logging" (logged model PENDING),
    "model_logged", "run_finished" (FINISHED, Keras Tuner's trial not COMPLETED yet),
    "between_trials" (both done) or "run_ended" (FAILED or KILLED)."""
    if row.status == "FINISHED":
        return "between_trials" if trial_json == "COMPLETED" else "run_finished"
    if row.status != "RUNNING":
        return "run_ended"
    if row.model_status == PENDING:
        return "model_logging"
    if row.tagged or row.model_status is not None:
        return "model_logged"
    if row.epoch is None:
        return "run_created"
    return "epoch" if row.epoch < epochs else "scoring"


def search_state(setup: Setup, known: set[str], had_search_run: bool) -> tuple[str, str]:
    """(phase, in words) of a search command (after it died): the latest trial run it
    made, or the phase before any. ``had_search_run``: the search's own run existed
    before the command started (then "search_created" cannot be where it stood)."""
    recover(setup)
    if search_run_done(setup):
        return "registering", f"after the search run FINISHED, registering its best model ({registry_state(setup)})"
    if not (setup.project / "oracle.json").exists():
        params = search_run_params(setup)
        if params is None:
            return "store_creation", f"before the search's run was created ({store_tables(setup)})"
        words = f"before Keras Tuner's state was first written (no oracle.json; the search's run {params} params)"
        return ("before_state" if had_search_run else "search_created"), words
    fresh = [r for r in trial_rows(setup) if r.run_id not in known]
    if not fresh:
        return "resuming", "resuming, before this command made a trial run"
    row = fresh[-1]
    return trial_phase(row, setup.epochs, trial_status(setup, row.trial)), describe(setup, row)


class SearchTrigger:
    """When to kill one search command: ``moment`` is "store_creation",
    "search_created", "before_state", one of SEARCH_MOMENTS, "registering" or
    "random". Only runs this command made count (``known`` are older)."""

    def __init__(self, moment: str, setup: Setup, known: set[str], rng: random.Random):
        self.moment, self.setup, self.known = moment, setup, known
        delays = {
            "before_state": (0.0, 0.6),
            "store_creation": (0.0, 0.8),
            "epoch": (0.0, 0.15),
            "model_logging": (0.0, 0.2),
            "registering": (0.0, 0.3),
            "random": (2.0, 30.0),
        }
        self.delay = rng.uniform(*delays.get(moment, (0.0, 0.0)))
        self.due: float | None = None
        self.pid = 0  # the command's

    def __call__(self, proc: psutil.Process, elapsed: float) -> str | None:
        self.pid = proc.pid
        ready = getattr(self, f"_{self.moment}")()
        if ready and self.due is None:
            self.due = elapsed + self.delay
        if self.moment == "random" and len(self._fresh()) > 1:
            return self.moment  # no later than this command's second trial: one trial's progress at most
        return self.moment if self.due is not None and elapsed >= self.due else None

    def _fresh(self) -> list[RunRow]:
        return [r for r in trial_rows(self.setup) if r.run_id not in self.known]

    def _store_creation(self) -> bool:
        db = self.setup.store.local_path
        assert db is not None
        return db.is_file() or any(db.parent.glob(f".{db.name}.tmp-{self.pid}"))

    def _search_created(self) -> bool:
        return search_run_params(self.setup) is not None

    def _before_state(self) -> bool:
        """The command holds the search's lock (not one a killed command left), the
        search's run exists and Keras Tuner has written no state yet."""
        # pianotx's lock file of the search: .NAME.TUNER.lock beside its Keras Tuner folder
        locks = [read_json(lock)[0] for lock in self.setup.project.parent.glob(f".{SEARCH}.*.lock")]
        mine = any(isinstance(lock, dict) and lock.get("pid") == self.pid for lock in locks)
        if not mine or (self.setup.project / "oracle.json").exists():
            return False
        return search_run_params(self.setup) is not None  # the lock is taken before the store is made

    def _run_created(self) -> bool:
        return bool(self._fresh())

    def _epoch(self) -> bool:
        training = [r for r in self._fresh() if r.status == "RUNNING" and r.model_status is None]
        return any(0 < (r.epoch or 0) < self.setup.epochs for r in training)

    def _model_logging(self) -> bool:
        return any(r.status == "RUNNING" and r.model_status == PENDING for r in self._fresh())

    def _run_finished(self) -> bool:
        finished = [r for r in self._fresh() if r.status == "FINISHED"]
        return any(trial_status(self.setup, r.trial) != "COMPLETED" for r in finished)

    def _registering(self) -> bool:
        return search_run_done(self.setup)

    def _state_write(self) -> bool:
        marker = self.setup.root / "state-write-reached"
        return marker.exists() and marker.stat().st_size > 0

    def _random(self) -> bool:
        return True


def search_plan(kills: int, rng: random.Random) -> list[str]:
    """The moment of each kill: first the moments before Keras Tuner's state exists
    (possible only in a new search; given 5 kills or more, while the new store is made
    and just after the search's run is created, then at a random instant), last while
    the best model is registered (only at the end), in between each of SEARCH_MOMENTS
    and random times, in seeded order."""
    first = ["store_creation", "search_created", "before_state"] if kills >= 5 else ["before_state"]
    if kills <= len(first):
        return first[-kills:] if kills else []
    middle = list(SEARCH_MOMENTS) + ["random"] * max(0, kills - len(first) - 1 - len(SEARCH_MOMENTS))
    rng.shuffle(middle)
    return [*first, *middle[: kills - len(first) - 1], "registering"]


# ---------------------------------------------------------------- search: checking


@dataclass(frozen=True)
class TrialRun:
    """A trial run as MLflow's client reports it."""

    run_id: str
    trial: str
    status: str
    params: dict[str, str]
    complete: bool  # FINISHED with its model tagged and its objective logged


def store_runs(setup: Setup) -> tuple[list[TrialRun], list[Any]]:
    """(trial runs, other runs) of the search, through MLflow's client."""
    if not setup.store.exists:
        return [], []
    from pianotx.tracking import connect

    client = connect(setup.store)
    experiment = client.get_experiment_by_name(SEARCH)
    if experiment is None:
        return [], []
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    trials = [
        TrialRun(
            r.info.run_id,
            r.data.tags[TRIAL_TAG],
            r.info.status,
            dict(r.data.params),
            r.info.status == "FINISHED" and MODEL_URI_TAG in r.data.tags and OBJECTIVE_METRIC in r.data.metrics,
        )
        for r in runs
        if TRIAL_TAG in r.data.tags
    ]
    return trials, [r for r in runs if TRIAL_TAG not in r.data.tags]


def tuner_trials(setup: Setup) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Keras Tuner's trials (id -> trial.json) and its files that cannot be read."""
    problems, trials = [], {}
    for name in ("oracle.json", "tuner0.json"):
        _, why = read_json(setup.project / name)
        if why and why != "missing":
            problems.append(f"{name} {why}")
    for path in sorted(setup.project.glob("trial_*/trial.json")):
        data, why = read_json(path)
        if why:
            problems.append(f"{path.parent.name}/trial.json {why}")
        else:
            trials[str(data["trial_id"])] = data
    return trials, problems


def same_value(logged: str, drawn: Any) -> bool:
    """Whether a param MLflow holds (a string) is the value Keras Tuner drew."""
    if isinstance(drawn, bool) or not isinstance(drawn, (int, float)):
        return logged == str(drawn)
    try:
        return float(logged) == round(float(drawn), 10)
    except ValueError:
        return False


def param_problems(run: TrialRun, drawn: dict[str, Any] | None) -> list[str]:
    where = f"run {run.run_id[:8]} of trial {run.trial}"
    if drawn is None:
        return [f"{where}: Keras Tuner has no such trial"]
    wrong = sorted(k for k, v in drawn.items() if k in run.params and not same_value(run.params[k], v))
    problems = [f"{where} logged {k}={run.params[k]}, drawn {drawn[k]}" for k in wrong]
    missing = sorted(set(drawn) - set(run.params))
    if run.complete and missing:
        problems.append(f"{where} lacks params {missing}")
    return problems


def drawn_problems(
    trials: dict[str, dict[str, Any]], runs: list[TrialRun], first_drawn: dict[str, dict[str, Any]]
) -> list[str]:
    """Trials whose values changed since first seen (new ones are recorded in
    ``first_drawn``), and runs that logged other values than their trial's first draw."""
    problems = []
    for trial, data in trials.items():
        values = data["hyperparameters"]["values"]
        first_drawn.setdefault(trial, values)
        if values != first_drawn[trial]:
            problems.append(f"trial {trial}'s hyperparameters changed from {first_drawn[trial]} to {values}")
    return problems + [p for run in runs for p in param_problems(run, first_drawn.get(run.trial))]


def consistency(setup: Setup, first_drawn: dict[str, dict[str, Any]]) -> list[str]:
    """What must hold at any instant, a kill included: Keras Tuner's files readable,
    no trial with two complete runs, each COMPLETED trial with one, every logged
    hyperparameter the value Keras Tuner first drew (see :func:`drawn_problems`)."""
    trials, problems = tuner_trials(setup)
    runs, _ = store_runs(setup)
    problems += drawn_problems(trials, runs, first_drawn)
    complete = {t: sum(r.complete for r in runs if r.trial == t) for t in {r.trial for r in runs} | set(trials)}
    problems += [f"trial {t} has {n} complete runs" for t, n in sorted(complete.items()) if n > 1]
    problems += [
        f"trial {t} is COMPLETED without a complete run"
        for t, data in sorted(trials.items())
        if data.get("status") == "COMPLETED" and complete[t] == 0
    ]
    return problems


def open_runs(setup: Setup) -> dict[str, str]:
    """Trial runs a resumed search must close: RUNNING, or FINISHED without their model."""
    runs, _ = store_runs(setup)
    return {r.run_id: f"{r.status} run {r.run_id[:8]} of trial {r.trial}" for r in runs if r.status == "RUNNING"} | {
        r.run_id: f"FINISHED run {r.run_id[:8]} of trial {r.trial} without its model"
        for r in runs
        if r.status == "FINISHED" and not r.complete
    }


@dataclass(frozen=True)
class Check:
    name: str
    problem: str | None  # None: passed


def final_checks(setup: Setup, first_drawn: dict[str, dict[str, Any]], last: Outcome) -> list[Check]:
    """Once the search has finished: the promise, check by check."""
    trials, unreadable = tuner_trials(setup)
    runs, others = store_runs(setup)
    drawn = drawn_problems(trials, runs, first_drawn)
    not_done = sorted(t for t, d in trials.items() if d.get("status") != "COMPLETED")
    counts = {t: sum(r.complete for r in runs if r.trial == t) for t in trials}
    running = [
        f"{r.info.run_id[:8]} ({r.data.tags.get('mlflow.runName', '?')})" for r in others if r.info.status == "RUNNING"
    ]
    running += [f"{r.run_id[:8]} (trial {r.trial})" for r in runs if r.status == "RUNNING"]
    return [
        Check("the last command finished the search", None if last.rc == 0 else last.failure()),
        Check(
            f"Keras Tuner holds {setup.trials} trials, all COMPLETED",
            None
            if len(trials) == setup.trials and not not_done and not unreadable
            else f"{len(trials)} trials; not COMPLETED: {not_done}; {unreadable}",
        ),  # fmt: skip
        Check(
            "every trial has exactly one complete MLflow run",
            None if counts and all(n == 1 for n in counts.values()) else f"complete runs per trial: {counts}",
        ),
        Check("its logged hyperparameters are those Keras Tuner first drew", "; ".join(drawn) or None),
        Check("no two trials drew the same hyperparameters", repeated_draws(first_drawn)),
        Check(
            "no trial run FINISHED without its model",
            "; ".join(v for v in open_runs(setup).values() if v.startswith("FINISHED")) or None,
        ),
        Check("no run left RUNNING (the search's included)", ", ".join(running) or None),
        Check("the search's run holds its setup (params, space file, manifest)", search_setup_problem(setup, others)),
        Check(
            "models:/piano/Production is the best trial's model, registered once",
            registered_problem(setup, runs, others),
        ),
        Check("models:/piano/Production loads and transcribes a clip", transcribe_problem(setup)),
    ]


def search_setup_problem(setup: Setup, others: list[Any]) -> str | None:
    from pianotx.tracking import connect

    searches = [r for r in others if r.data.tags.get("pianotx_kind") == "search"]
    if len(searches) != 1:
        return f"{len(searches)} search runs"
    missing = sorted({"tuner", "objective", "dataset", "dataset_fingerprint"} - set(searches[0].data.params))
    files = {a.path for a in connect(setup.store).list_artifacts(searches[0].info.run_id)}
    missing += sorted({setup.space.name, "manifest.json"} - files)
    return f"missing: {', '.join(missing)}" if missing else None


def repeated_draws(first_drawn: dict[str, dict[str, Any]]) -> str | None:
    """Trials with the values of an earlier one (a random search never repeats itself)."""
    seen: dict[str, str] = {}
    repeats = []
    for trial, values in sorted(first_drawn.items()):
        key = json.dumps(values, sort_keys=True)
        if key in seen:
            repeats.append(f"trial {trial} drew trial {seen[key]}'s values")
        seen.setdefault(key, trial)
    return "; ".join(repeats) or None


def registered_problem(setup: Setup, runs: list[TrialRun], others: list[Any]) -> str | None:
    from pianotx.tracking import connect

    searches = [r for r in others if r.data.tags.get("pianotx_kind") == "search"]
    if len(searches) != 1:
        return f"{len(searches)} search runs"
    best = searches[0].data.tags.get("best_trial_id")
    best_runs = [r for r in runs if r.trial == best and r.complete]
    client = connect(setup.store)
    # the bundled model is registered first as the store's champion; the search promotes
    # its best model over it (--promote always)
    versions = [v for v in client.search_model_versions("name = 'piano'") if "pianotx.bundled" not in v.tags]
    production = [v for v in versions if v.current_stage == "Production"]
    if len(best_runs) != 1 or len(versions) != 1 or len(production) != 1:
        return (
            f"best trial {best}: {len(best_runs)} complete runs; {len(versions)} versions, {len(production)} Production"
        )
    uri = client.get_run(best_runs[0].run_id).data.tags[MODEL_URI_TAG]
    return (
        None if production[0].source == uri else f"Production holds {production[0].source}, the best trial's is {uri}"
    )


def transcribe_problem(setup: Setup) -> str | None:
    from pianotx.quiet import import_keras_quietly

    import_keras_quietly()
    from pianotx.transcribe import load_transcriber, transcribe_file

    try:
        transcriber = load_transcriber("models:/piano/Production", setup.store.tracking_uri)
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        return f"{type(exc).__name__}: {exc}"
    result = transcribe_file(transcriber, setup.clip, setup.root / "transcribed")
    return result.error or (None if result.midi and result.midi.is_file() else "no MIDI written")


# ---------------------------------------------------------------- search: the rounds


def search_command(setup: Setup, hook: bool = False) -> list[str]:
    code = child_code(STATE_HOOK if hook else "")
    return [sys.executable, "-c", code, "search", str(setup.space), "--data", str(setup.dataset),
            "--tracking-uri", setup.store.tracking_uri, "--promote", "always"]  # fmt: skip


def guarded(check: Callable[..., Any], setup: Setup, failed: Any, *args: Any) -> Any:
    """``check(setup, *args)``, or ``failed`` where the store cannot be read at all (the
    error is printed: such a store is a finding, not a reason to stop)."""
    try:
        return check(setup, *args)
    except Exception as exc:  # noqa: BLE001 - MLflow and SQLAlchemy raise many kinds
        print(f"the store cannot be read: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return failed


class SearchChaos:
    """The search killed round after round, each kill's verdict gathered as it comes."""

    def __init__(self, setup: Setup, rng: random.Random, say: Callable[[str], None]):
        self.setup, self.rng, self.say = setup, rng, say
        self.marker = setup.root / "state-write-reached"
        self.env = child_env() | {
            "CHAOS_STARTED_MARKER": str(setup.root / "started"),
            "CHAOS_PROJECT": str(setup.project),
            "CHAOS_STATE_MARKER": str(self.marker),
            "CHAOS_STATE_PAUSE": "3",
        }
        self.first_drawn: dict[str, dict[str, Any]] = {}
        self.reports: list[KillReport] = []
        self.pending: list[tuple[KillReport, dict[str, str]]] = []  # runs a kill left open
        self.attributed: set[str] = set()  # runs found open after some kill
        self.failures: list[str] = []  # commands that failed by themselves
        self.rounds = 0
        self.finished = False  # a command ended the search

    def round(self, moment: str | None) -> Outcome:
        """One command, killed at ``moment`` (None: let it end); settles earlier kills."""
        self.rounds += 1
        known = {r.run_id for r in trial_rows(self.setup)}
        had_search_run = search_run_params(self.setup) is not None
        self.marker.unlink(missing_ok=True)
        trigger = SearchTrigger(moment, self.setup, known, self.rng) if moment else None
        log = self.setup.root / "logs" / f"search-{self.rounds}.log"
        cmd = search_command(self.setup, hook=moment == "state_write")
        status = self.rng.choice(["RUNNING", "COMPLETED"]) if moment == "state_write" else "RUNNING"
        env = self.env | {"CHAOS_STATE_STATUS": status}
        outcome = run_command(cmd, trigger, log, env, self.setup.root)
        self.finished = outcome.moment is None and outcome.rc == 0
        resumed = self.finished or any(r.run_id not in known for r in trial_rows(self.setup))
        self._settle(outcome, resumed)
        if outcome.moment is not None:
            hooked = self.marker.read_text() if self.marker.exists() else ""
            if hooked:  # the command wrote the marker between the two writes and waits there
                outcome.landed, outcome.moment = "state_write", hooked
            else:
                outcome.landed, outcome.moment = search_state(self.setup, known, had_search_run)
        return outcome

    def _settle(self, outcome: Outcome, resumed: bool) -> None:
        if outcome.failed:
            self.failures.append(f"search command {self.rounds} failed ({outcome.failure()})")
            if self.reports:
                self.reports[-1].problems.append("the next command failed")
        if not resumed:
            return
        still = guarded(open_runs, self.setup, {})
        for report, left in self.pending:
            report.problems += [f"{what}, left by this kill, still open after the search resumed"
                                for run_id, what in left.items() if run_id in still]  # fmt: skip
            if left:
                report.notes.append(f"{len(left)} run(s) it left open were closed on resume")
        self.pending = []

    def kill(self, number: int, total: int, moment: str) -> bool:
        """Kill number ``number``; False when the search ended before the moment came."""
        outcome = self.round(moment)
        if outcome.moment is None:
            if outcome.rc == 0:
                self.say(f"search kill {number}/{total} [{moment}] not made: the search finished first")
            return False
        problems = guarded(consistency, self.setup, None, self.first_drawn)
        report = KillReport("search", number, moment, outcome, problems or [])
        if problems is None:
            report.problems.append("the store cannot be read after the kill")
        left = {k: v for k, v in guarded(open_runs, self.setup, {}).items() if k not in self.attributed}
        self.attributed |= set(left)
        self.pending.append((report, left))
        self.reports.append(report)
        state = "consistent" if not report.problems else "; ".join(report.problems)
        counted = f" ({report.discarded}: not counted)" if report.discarded else ""
        where = f"{outcome.moment}, {outcome.seconds:.1f} s in"
        self.say(f"search kill {number}/{total} [{moment}] {where}: store {state}{counted}")
        return True

    def run(self, plan: Sequence[str]) -> list[Check]:
        """Kill at each moment of ``plan``, then let a last command finish; the final checks."""
        for number, moment in enumerate(plan, 1):
            if not self.kill(number, len(plan), moment):
                break
        last = Outcome(None, 0, 0.0) if self.finished else self.round(None)
        checks = guarded(final_checks, self.setup, None, self.first_drawn, last)
        if checks is None:
            checks = [Check("the store can be read at the end", "no: see the error printed above")]
        failed = [c.name for c in checks if c.problem]
        if failed and self.reports:
            self.reports[-1].problems.append(f"final checks failed: {', '.join(failed)}")
        return checks


# ---------------------------------------------------------------- main


@dataclass
class Summary:
    kills: list[KillReport]
    checks: list[Check]
    failures: list[str]

    @property
    def made(self) -> int:
        return sum(r.made for r in self.kills)

    @property
    def counted(self) -> int:
        """Kills that landed in the phase they name, after start-up."""
        return sum(r.counted for r in self.kills)

    @property
    def survived(self) -> int:
        return sum(r.survived for r in self.kills)

    @property
    def ok(self) -> bool:
        """Every kill made left no problem (a discarded one's are findings too), no command
        failed by itself and every final check passed."""
        clean = not any(r.problems for r in self.kills if r.made)
        return clean and not self.failures and not any(c.problem for c in self.checks)


def tally(kills: Sequence[KillReport]) -> list[str]:
    """The closing lines: kills made, counted and discarded (each discarded one and why),
    and last ``kills survived / kills counted: X/Y``."""
    made = [r for r in kills if r.made]
    discarded = [r for r in made if r.discarded]
    counted, survived = len(made) - len(discarded), sum(r.survived for r in kills)
    totals = {kind: sum(r.kind == kind for r in kills) for kind in ("build", "search")}
    return [
        f"kills made: {len(made)}; landed in their phase (counted): {counted}; discarded: {len(discarded)}",
        *(f"discarded: {r.kind} kill {r.number}/{totals.get(r.kind, r.number)} [{r.planned}]: {r.discarded}"
          for r in discarded),
        f"kills survived / kills counted: {survived}/{counted}",
    ]  # fmt: skip


def enough_trials(plan: Sequence[str]) -> int:
    """Trials for every planned kill to find its moment: a kill at a random time, after
    a run turned FINISHED or between Keras Tuner's state files may take the search one
    trial further, the others none; and one trial to spare."""
    return max(3, sum(m in ("random", "run_finished", "state_write") for m in plan) + 2)


def run_chaos(
    root: Path, kills: int = 10, build_kills: int = 5, seed: int = 0, trials: int | None = None, epochs: int = 3,
    say: Callable[[str], None] = print,
) -> Summary:  # fmt: skip
    """Build chaos, then search chaos, in ``root``; prints as it goes through ``say``.

    ``trials``: of the search (default: :func:`enough_trials`)."""
    rng = random.Random(seed)
    plan = search_plan(kills, rng)
    trials = trials or enough_trials(plan)
    setup = set_up(root, seed, trials, epochs)
    start = time.monotonic()
    builds, failures = build_chaos(setup, build_kills, rng, say)
    say(f"build chaos: {time.monotonic() - start:.0f} s")
    start = time.monotonic()
    search = SearchChaos(setup, rng, say)
    checks = search.run(plan)
    say(f"search chaos: {time.monotonic() - start:.0f} s, {search.rounds} commands")
    return Summary(builds + search.reports, checks, failures + search.failures)


def report(summary: Summary, say: Callable[[str], None] = print) -> None:
    say("")
    for kind in ("build", "search"):
        reports = [r for r in summary.kills if r.kind == kind]
        for r in reports:
            say(r.line(len(reports)))
    for check in summary.checks:
        say(f"check: {check.name}: {'ok' if check.problem is None else 'FAILED: ' + check.problem}")
    for failure in summary.failures:
        say(f"failure: {failure}")
    for line in tally(summary.kills):
        say(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="search kills")
    parser.add_argument("--build-kills", type=int, default=5, help="data build kills")
    parser.add_argument("--seed", type=int, default=0, help="kill moments, data and the search's own seed")
    parser.add_argument("--trials", type=int, help="trials of the search (default: enough for the kills, 3 or more)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="pianotx-chaos-"))
    try:
        summary = run_chaos(root, args.kills, args.build_kills, args.seed, args.trials, args.epochs)
        report(summary)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
