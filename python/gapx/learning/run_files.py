"""What an on-the-fly learning run keeps in its folder, written so that nothing is ever lost.

=================  =====================================================================
``run.json``       the settings that determine the run (a resumed run must use the same)
``train.extxyz``   the initial training frames, when the run was given some
``calls.extxyz``   every oracle call, appended and fsync'ed as it happens: the journal
``model.gapx``     the current model, replaced atomically after each update
``learner.npz``    the incremental fit (:meth:`IncrementalFit.to_arrays`), replaced atomically
``state.json``     the MD state (step, positions, momenta, random generator, calls so far),
                   replaced atomically after each call and every few steps
``log.csv``        step, time, temperature, max force std, whether the oracle was called
``learning.png``   the run at a glance (:func:`gapx.plotting.learning_plot`)
=================  =====================================================================

Frames are trained on exactly as ``calls.extxyz`` stores them (the extxyz text is parsed back),
so a resumed run that rebuilds its data from the journal sees the very same numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np

from ..io import atomic_write, sync_folder

LOG_COLUMNS = (
    "step",
    "time_ps",
    "temperature_K",
    "max_force_std",
    "oracle_called",
    "max_force_error",
)


def _extxyz_text(frames) -> str:
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, frames, format="extxyz")
    return buffer.getvalue()


def _parse_extxyz(text: str) -> list:
    import ase.io

    if not text.strip():
        return []
    return ase.io.read(io.StringIO(text), index=":", format="extxyz")


def _complete_frames(text: str) -> tuple[str, int]:
    """The longest prefix of extxyz ``text`` made of whole frames, and how many there are (a
    crash in the middle of an append leaves a partial last frame)."""
    lines = text.splitlines(keepends=True)
    position, end, count = 0, 0, 0
    while position < len(lines):
        header = lines[position].strip()
        try:
            n_atoms = int(header)
        except ValueError:
            break
        stop = position + n_atoms + 2
        if stop > len(lines) or not lines[stop - 1].endswith("\n"):
            break
        end += sum(len(line) for line in lines[position:stop])
        position = stop
        count += 1
    return text[:end], count


class RunFolder:
    """The files of one learning run in ``directory`` (created when missing)."""

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        path = lambda name: os.path.join(self.directory, name)  # noqa: E731
        self.settings = path("run.json")
        self.train = path("train.extxyz")
        self.calls = path("calls.extxyz")
        self.model = path("model.gapx")
        self.learner = path("learner.npz")
        self.state = path("state.json")
        self.log = path("log.csv")
        self.plot = path("learning.png")

    def create(self) -> None:
        """Make the folder for a new run; ValueError when it already holds one."""
        if os.path.exists(self.settings):
            raise ValueError(
                f"{self.directory} already holds a learning run: continue it with resume "
                "(gapx learn --resume) or choose another folder"
            )
        os.makedirs(self.directory, exist_ok=True)

    def remove_temporaries(self) -> None:
        """Remove what a run killed in the middle of an atomic write left behind."""
        names = [os.path.basename(p) for p in (self.train, self.model, self.learner)]
        names += [os.path.basename(p) for p in (self.state, self.log, self.settings)]
        for entry in os.listdir(self.directory):
            if any(entry.startswith(f".{name}.") for name in names):
                os.remove(os.path.join(self.directory, entry))

    def exists(self) -> bool:
        return os.path.isfile(self.settings)

    def write_json(self, path: str, data: dict) -> None:
        with atomic_write(path, "w") as handle:
            json.dump(data, handle, allow_nan=True)

    def read_json(self, path: str) -> dict:
        with open(path) as handle:
            return json.load(handle)

    def write_frames(self, path: str, frames) -> list:
        """Write ``frames`` to ``path`` atomically; returns them as read back."""
        text = _extxyz_text(list(frames))
        with atomic_write(path, "w") as handle:
            handle.write(text)
        return _parse_extxyz(text)

    def read_frames(self, path: str) -> list:
        if not os.path.isfile(path):
            return []
        with open(path) as handle:
            return _parse_extxyz(handle.read())

    def append_call(self, frame):
        """Append one labelled frame to ``calls.extxyz`` and fsync it; returns the frame as the
        journal stores it (what the model is trained on)."""
        text = _extxyz_text([frame])
        new = not os.path.exists(self.calls)
        with open(self.calls, "a") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if new:
            sync_folder(self.directory)
        return _parse_extxyz(text)[0]

    def read_calls(self) -> list:
        """Every complete frame of ``calls.extxyz`` (a partial last frame, left by a crash in
        the middle of an append, is cut off the file)."""
        if not os.path.isfile(self.calls):
            return []
        with open(self.calls) as handle:
            text = handle.read()
        complete, _ = _complete_frames(text)
        if len(complete) != len(text):
            with open(self.calls, "r+") as handle:
                handle.truncate(len(complete.encode("utf-8")))
                os.fsync(handle.fileno())
        return _parse_extxyz(complete)

    def write_model(self, model) -> None:
        model.save(self.model)  # atomic: see gapx.io.write_model_file

    def write_learner(self, learner) -> None:
        with atomic_write(self.learner) as handle:
            np.savez(handle, **learner.to_arrays())

    def read_learner(self) -> dict:
        with np.load(self.learner, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def start_log(self, keep_until: int | None, inclusive: bool) -> None:
        """Open ``log.csv`` for appending: a new file with its header, or (resuming) the old
        one without the rows after step ``keep_until`` (``inclusive``: that step's rows too),
        which the resumed run writes again."""
        rows = []
        if keep_until is not None and os.path.isfile(self.log):
            with open(self.log, newline="") as handle:
                text = handle.read()
            complete = text[: text.rfind("\n") + 1]  # a crash can leave half a last row
            for row in csv.DictReader(io.StringIO(complete)):
                step = int(row["step"])
                if step < keep_until or (step == keep_until and not inclusive):
                    rows.append(row)
        with atomic_write(self.log, "w") as handle:
            writer = csv.DictWriter(handle, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self._log = open(self.log, "a", newline="")  # noqa: SIM115 - closed by close_log
        self._writer = csv.DictWriter(self._log, LOG_COLUMNS)

    def log_row(self, **values) -> None:
        row = {k: values.get(k, "") for k in LOG_COLUMNS}
        for key, value in row.items():
            if isinstance(value, (float, np.floating)):
                row[key] = "" if math.isnan(value) else repr(float(value))
            elif isinstance(value, np.integer):
                row[key] = int(value)
        self._writer.writerow(row)
        self._log.flush()

    def sync_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.flush()
            os.fsync(self._log.fileno())

    def close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def read_log(self) -> dict[str, np.ndarray]:
        """``log.csv`` as arrays by column (empty cells are NaN)."""
        columns = {k: [] for k in LOG_COLUMNS}
        if os.path.isfile(self.log):
            with open(self.log, newline="") as handle:
                for row in csv.DictReader(handle):
                    for k in LOG_COLUMNS:
                        columns[k].append(float(row[k]) if row.get(k) not in ("", None) else np.nan)
        return {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
