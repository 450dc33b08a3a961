"""Scan an archive: ``python -m deepshield scan PATH... --out results.parquet`` (or ``.csv``).

Walks the folders (streamed, sorted), tells images and videos apart by content as ``predict`` does, and scores
each with ``Detector.predict_image`` / ``predict_video``. Two tables: one row per file (``FILE_COLUMNS``) and one
row per face (``FACE_COLUMNS``; for videos, each main face of each sampled frame).

Nothing is lost: finished rows go to OUT.parts/ in parts written atomically (a temporary name, then a rename)
every ``--flush-every`` files or ``FLUSH_SECONDS``; a re-run of the same command skips files already there
(same path, size and modification time) and scans the rest; Ctrl-C saves what has finished. At the end the
parts are merged into OUT (files) and OUT's ``.faces`` sibling (faces), each written atomically, the latest row
of a path winning. A file that cannot be read is a row with its error; a file that is neither image nor video
is a row of kind "skipped". The listing and the results are streamed, so memory does not grow with the
archive (beyond the set of paths already done).

Parallelism: ``--workers N`` processes, each with its own detector and ``cores / N`` torch threads; or
``--ray ADDRESS|auto|local``: the same ``scan_file`` in an actor pool on a Ray cluster through Ray Data
(``pip install "ray[data]"``; imported only then).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import signal
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2

from .detector import NO_FACE, Detector, ImageResult
from .media import atomic_path, sniff_media

FORMATS = (".parquet", ".csv")
RAY_CHUNK = 512  # files per Ray Data run: what an interrupted Ray scan can lose
FLUSH_SECONDS = 10.0  # a crash loses at most this long of finished work (and the files in flight)
FILE_COLUMNS = {  # name: type ("str", "int", "float", "bool"); the README documents them
    "path": "str", "size": "int", "mtime_ns": "int", "kind": "str", "label": "str", "prob_fake": "float",
    "uncertain": "bool", "faces": "int", "frames": "int", "error": "str", "model": "str",
}
FACE_COLUMNS = {"path": "str", "frame": "int", "x": "int", "y": "int", "w": "int", "h": "int", "score": "float",
                "prob_fake": "float"}
Row = dict[str, Any]


@dataclass(frozen=True)
class FileRef:
    """A file as listed: what makes it "the same file" on a re-run."""

    path: str
    size: int
    mtime_ns: int


# ----------------------------------------------------------------------------------------------------
# Listing.


def walk(paths: Iterable[str | os.PathLike], exclude: Iterable[Path] = ()) -> Iterator[FileRef]:
    """Every file under ``paths`` (files are taken as they are), depth first in name order, streamed;
    nothing under ``exclude``. Raises: FileNotFoundError for a path that does not exist."""
    excluded = {Path(p).resolve() for p in exclude}
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        yield from _walk_one(path, excluded)


def _walk_one(path: Path, excluded: set[Path]) -> Iterator[FileRef]:
    if path.resolve() in excluded:
        return
    if path.is_file():
        stat = path.stat()
        yield FileRef(str(path), stat.st_size, stat.st_mtime_ns)
    elif path.is_dir():
        for child in sorted(path.iterdir(), key=lambda p: p.name):
            yield from _walk_one(child, excluded)


# ----------------------------------------------------------------------------------------------------
# The per-file work: one code path, local or on Ray.


def model_version(detector: Detector) -> str:
    """``arch@size sha256:…`` of the weights in use: which model made a row."""
    digest = "unknown"
    if detector.weights_path is not None and Path(detector.weights_path).is_file():
        digest = hashlib.sha256(Path(detector.weights_path).read_bytes()).hexdigest()[:16]
    return f"{detector.meta.arch}@{detector.meta.img_size} sha256:{digest}"


def scan_file(detector: Detector, ref: FileRef, frames: int, model: str) -> tuple[Row, list[Row]]:
    """Score one file. Returns: its file row and its face rows; a bad file is a row with its error, never an
    exception."""
    row: Row = {"path": ref.path, "size": ref.size, "mtime_ns": ref.mtime_ns, "kind": "skipped", "label": "",
                "prob_fake": math.nan, "uncertain": False, "faces": 0, "frames": 0, "error": "", "model": model}
    try:
        row["kind"] = sniff_media(ref.path)
    except (FileNotFoundError, ValueError) as err:
        return {**row, "error": str(err)}, []
    try:
        if row["kind"] == "image":
            result = detector.predict_image(ref.path)
            detections = [(0, face) for face in result.faces]
        else:
            result = detector.predict_video(ref.path, frames)
            detections = [(f.index, face) for f in result.frames for face in f.detections]
    except (FileNotFoundError, ValueError, OSError, cv2.error) as err:
        return {**row, "error": str(err) or type(err).__name__}, []
    faces = [{"path": ref.path, "frame": index, "x": face.box[0], "y": face.box[1], "w": face.box[2],
              "h": face.box[3], "score": face.score, "prob_fake": face.prob_fake} for index, face in detections]
    found = result.face_found
    row.update(label=result.label if found else NO_FACE, prob_fake=result.prob_fake if found else math.nan,
               uncertain=bool(result.uncertain and found), faces=len(faces),
               frames=1 if isinstance(result, ImageResult) else result.frames_analysed)
    return row, faces


# ----------------------------------------------------------------------------------------------------
# Tables on disk: parts, the done set, the merged outputs.


def faces_path(out: Path) -> Path:
    """Where the faces table of ``out`` goes: results.parquet -> results.faces.parquet."""
    return out.with_name(f"{out.stem}.faces{out.suffix}")


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def write_table(path: Path, rows: list[Row], columns: dict[str, str]) -> None:
    """Write ``rows`` as Parquet or CSV (by ``path``'s suffix), atomically."""
    writer = TableWriter(path, columns)
    try:
        writer.write(rows)
    except BaseException:
        writer.close(keep=False)
        raise
    writer.close()


def read_table(path: Path, columns: dict[str, str]) -> Iterator[Row]:
    """The rows of a table written by ``write_table``, typed as ``columns`` says."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    convert = {"str": str, "int": int, "float": float, "bool": lambda v: v == "True"}
    with open(path, newline="") as handle:
        for raw in csv.DictReader(handle):
            yield {name: convert[kind](raw[name]) for name, kind in columns.items()}


def _arrow_table(rows: list[Row], columns: dict[str, str]) -> Any:
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types[kind]) for name, kind in columns.items()])
    return pa.Table.from_pylist(rows, schema=schema)


class PartWriter:
    """Finished rows, written as a pair of part files (faces first, then files: a files part is the mark that
    its files are done) every ``flush_every`` files or ``FLUSH_SECONDS``."""

    def __init__(self, folder: Path, suffix: str, flush_every: int) -> None:
        self.folder, self.suffix, self.flush_every = folder, suffix, flush_every
        self.files: list[Row] = []
        self.faces: list[Row] = []
        self.last = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: Row, faces: list[Row]) -> None:
        self.files.append(row)
        self.faces += faces
        if len(self.files) >= self.flush_every or time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.files:
            stem = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"  # sorts by time: the latest row wins
            write_table(self.folder / f"{stem}.faces{self.suffix}", self.faces, FACE_COLUMNS)
            write_table(self.folder / f"{stem}.files{self.suffix}", self.files, FILE_COLUMNS)
        self.files, self.faces, self.last = [], [], time.monotonic()


def file_parts(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"part-*.files{suffix}")) if folder.is_dir() else []


def done_keys(folder: Path, suffix: str) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file in the parts; faces parts whose files part never landed (a crash
    between the two writes) are removed."""
    keys = {(r["path"], r["size"], r["mtime_ns"]) for part in file_parts(folder, suffix) for r in read_table(part, FILE_COLUMNS)}
    for orphan in folder.glob(f"part-*.faces{suffix}") if folder.is_dir() else []:
        if not orphan.with_name(orphan.name.replace(f".faces{suffix}", f".files{suffix}")).is_file():
            orphan.unlink()
    return keys


class TableWriter:
    """Rows appended a batch at a time to one Parquet or CSV file, which appears (atomically) on ``close``."""

    def __init__(self, path: Path, columns: dict[str, str]) -> None:
        self.path, self.columns = path, columns
        self._partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self._partial, _arrow_table([], columns).schema)
        else:
            self._handle = open(self._partial, "w", newline="")
            self._csv = csv.DictWriter(self._handle, fieldnames=list(columns))
            self._csv.writeheader()

    def write(self, rows: list[Row]) -> None:
        if self.path.suffix == ".parquet":
            self._parquet.write_table(_arrow_table(rows, self.columns))
        else:
            self._csv.writerows(rows)

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it into place (``keep``), or throw it away."""
        if self.path.suffix == ".parquet":
            self._parquet.close()
        else:
            self._handle.close()
        if keep:
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)


def merge(out: Path) -> Counter:
    """Merge the parts into ``out`` and ``faces_path(out)``, part by part (the latest row of each path wins;
    its faces go with it). Returns: the summary counts (see ``outcome``)."""
    parts = file_parts(parts_dir(out), out.suffix)
    latest = {r["path"]: i for i, part in enumerate(parts) for r in read_table(part, FILE_COLUMNS)}
    files, faces, counts = TableWriter(out, FILE_COLUMNS), TableWriter(faces_path(out), FACE_COLUMNS), Counter()
    try:
        for i, part in enumerate(parts):
            mine = [r for r in read_table(part, FILE_COLUMNS) if latest[r["path"]] == i]
            kept = {r["path"] for r in mine}
            files.write(mine)
            faces.write([f for f in read_table(part.with_name(part.name.replace(".files", ".faces")), FACE_COLUMNS)
                         if f["path"] in kept])
            counts.update(outcome(r) for r in mine)
    except BaseException:
        files.close(keep=False)
        faces.close(keep=False)
        raise
    faces.close()
    files.close()
    return counts


def outcome(row: Row) -> str:
    """A file row's line in the summary: error, skipped, no face, uncertain, or its label."""
    if row["kind"] == "skipped":
        return "skipped"
    if row["error"]:
        return "error"
    if row["label"] == NO_FACE:
        return "no face"
    return "uncertain" if row["uncertain"] else row["label"].lower()


# ----------------------------------------------------------------------------------------------------
# Running the work: in this process, in worker processes, or on Ray.

_worker: tuple[Detector, str] | None = None  # one per worker process


def init_worker(detector_kwargs: dict[str, Any], threads: int) -> None:
    """Build this process's detector; Ctrl-C is left to the parent, which stops the pool."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _worker = worker_detector(detector_kwargs, threads)


def worker_detector(detector_kwargs: dict[str, Any], threads: int) -> tuple[Detector, str]:
    """A worker's (process or Ray actor) own detector with ``threads`` torch threads, and its model version."""
    import torch

    from .detector import load_detector

    torch.set_num_threads(threads)
    detector = load_detector(**detector_kwargs)
    return detector, model_version(detector)


def worker_scan(ref: FileRef, frames: int) -> tuple[Row, list[Row]]:
    assert _worker is not None, "init_worker() first"
    return scan_file(_worker[0], ref, frames, _worker[1])


def scan_in_processes(refs: Iterable[FileRef], frames: int, workers: int, detector_kwargs: dict[str, Any],
                      threads: int) -> Iterator[tuple[Row, list[Row]]]:
    """``scan_file`` over ``refs`` in ``workers`` processes, at most two files a worker in flight (so the
    listing is read as the work goes, not all at once). Yields results as they finish."""
    import multiprocessing

    # spawn: OpenCV's and torch's thread pools do not survive fork().
    with ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), init_worker, (detector_kwargs, threads)) as pool:
        pending: set[Future] = set()
        try:
            for ref in refs:
                pending.add(pool.submit(worker_scan, ref, frames))
                if len(pending) >= 2 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in finished)
            for future in pending:
                yield future.result()
        finally:
            for future in pending:
                future.cancel()


def scan_on_ray(refs: list[FileRef], frames: int, address: str, detector_kwargs: dict[str, Any],
                folder: Path, chunk: int = RAY_CHUNK) -> Iterator[tuple[Row, list[Row]]]:
    """``scan_file`` on a Ray cluster: per ``chunk`` files, a listing dataset, ``map_batches`` over an actor
    pool with one detector per actor, the rows written as Parquet by Ray under ``folder``, then read back (and
    that copy removed): a chunk is the most an interruption loses. On a local instance the pool takes all
    CPUs but one, which Ray Data's read and write tasks need (with every CPU held by actors the pipeline
    waits forever)."""
    import pyarrow.parquet as pq
    import ray

    from .cli import usable_cores

    if not ray.is_initialized():
        local = address == "local"
        ray.init(address=None if local else address, num_cpus=usable_cores() if local else None,
                 include_dashboard=False, log_to_driver=False, logging_level="warning")
    ray.data.DataContext.get_current().enable_progress_bars = False  # the scan's own bar counts files
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    for start in range(0, len(refs), chunk):
        written = folder / f"ray-{uuid.uuid4().hex[:8]}"
        dataset = ray.data.from_items([asdict(ref) for ref in refs[start : start + chunk]])
        dataset.map_batches(RayScanner, fn_constructor_kwargs={"detector_kwargs": detector_kwargs, "frames": frames},
                            batch_size=4, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1
                            ).write_parquet(str(written))
        rows = [row for part in sorted(written.glob("*.parquet")) for row in pq.read_table(part).to_pylist()]
        shutil.rmtree(written)
        for row in rows:
            faces = json.loads(row.pop("faces_json"))
            yield {k: row[k] for k in FILE_COLUMNS}, faces


class RayScanner:
    """A Ray Data actor: one detector, ``scan_file`` for each path of a batch; the faces ride along as JSON."""

    def __init__(self, detector_kwargs: dict[str, Any], frames: int) -> None:
        (self.detector, self.model), self.frames = worker_detector(detector_kwargs, 1), frames

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name in (*FILE_COLUMNS, "faces_json")}
        for path, size, mtime in zip(batch["path"], batch["size"], batch["mtime_ns"]):
            row, faces = scan_file(self.detector, FileRef(str(path), int(size), int(mtime)), self.frames, self.model)
            for name in FILE_COLUMNS:
                out[name].append(row[name])
            out["faces_json"].append(json.dumps(faces))
        return out


# ----------------------------------------------------------------------------------------------------
# A batch of uploads (the app's Batch tab): files and .zip archives, scanned in this process.


def unpack(uploads: list[tuple[str, Path]], into: Path, max_files: int, max_bytes: int) -> list[tuple[str, Path]]:
    """The files of a batch as (display name, path): uploads as they are, .zip archives extracted under ``into``
    (members named ``archive.zip/member``). Raises: ValueError naming the problem for an unreadable archive, a
    member that would land outside ``into``, or a batch over ``max_files`` files or ``max_bytes`` bytes."""
    out: list[tuple[str, Path]] = []
    total = 0
    for name, path in uploads:
        if not zipfile.is_zipfile(path):
            out.append((name, path))
            total += path.stat().st_size
            continue
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                total += sum(m.file_size for m in members)  # checked before anything is written
                if total > max_bytes or len(out) + len(members) > max_files:
                    break
                target = into / f"{len(out):05d}"
                for member in members:
                    if not (target / member.filename).resolve().is_relative_to(target.resolve()):
                        raise ValueError(f"{name}: member {member.filename!r} would be written outside the archive's folder")
                    archive.extract(member, target)
                    out.append((f"{name}/{member.filename}", target / member.filename))
        except zipfile.BadZipFile as err:
            raise ValueError(f"{name}: unreadable .zip archive ({err})") from err
    if total > max_bytes or len(out) > max_files:
        raise ValueError(f"a batch holds at most {max_files} files and {max_bytes / 2**20:.0f} MB (archives counted "
                         f"unpacked); this one is over: send it in parts, or scan it with `python -m deepshield scan`")
    return out


def scan_batch(detector: Detector, files: list[tuple[str, Path]], frames: int, out_dir: Path,
               progress: Callable[[int, str], None] | None = None) -> tuple[list[Row], Counter, list[Path]]:
    """Score every (display name, path) in this process. Returns: the file rows (paths shown by display name),
    the summary counts, and the two tables written under ``out_dir`` as CSV and as Parquet."""
    model = model_version(detector)
    files_rows: list[Row] = []
    faces_rows: list[Row] = []
    for i, (name, path) in enumerate(files):
        if progress:
            progress(i, name)
        stat = path.stat()
        row, faces = scan_file(detector, FileRef(str(path), stat.st_size, stat.st_mtime_ns), frames, model)
        files_rows.append({**row, "path": name, "error": row["error"].replace(str(path), name)})
        faces_rows += [{**face, "path": name} for face in faces]
    written = []
    for suffix in FORMATS:
        out = out_dir / f"deepshield_scan{suffix}"
        write_table(out, files_rows, FILE_COLUMNS)
        write_table(faces_path(out), faces_rows, FACE_COLUMNS)
        written += [out, faces_path(out)]
    return files_rows, Counter(outcome(r) for r in files_rows), written


# ----------------------------------------------------------------------------------------------------
# The command.


@dataclass
class ScanJob:
    paths: list[str]
    out: Path
    frames: int
    workers: int  # 0: in this process
    ray: str | None
    detector_kwargs: dict[str, Any]
    flush_every: int = 32


def check_out(out: Path) -> None:
    if out.suffix not in FORMATS:
        raise ValueError(f"--out {out}: expected a {' or '.join(FORMATS)} file")


def pending_files(job: ScanJob) -> tuple[Iterator[FileRef], int, int]:
    """The files still to scan, streamed; how many there are; how many were done before."""
    folder = parts_dir(job.out)
    done = done_keys(folder, job.out.suffix)
    exclude = [folder, job.out, faces_path(job.out)]

    def todo() -> Iterator[FileRef]:
        return (r for r in walk(job.paths, exclude) if (r.path, r.size, r.mtime_ns) not in done)

    return todo(), sum(1 for _ in todo()), len(done)


def results(job: ScanJob, refs: Iterator[FileRef]) -> Iterator[tuple[Row, list[Row]]]:
    """The rows of ``refs``, from the engine ``job`` asks for."""
    if job.ray:
        return scan_on_ray(list(refs), job.frames, job.ray, job.detector_kwargs, parts_dir(job.out))
    if job.workers >= 1:
        from .cli import usable_cores

        threads = max(1, usable_cores() // job.workers)
        return scan_in_processes(refs, job.frames, job.workers, job.detector_kwargs, threads)
    from .detector import load_detector

    detector = load_detector(**job.detector_kwargs)
    model = model_version(detector)
    return (scan_file(detector, ref, job.frames, model) for ref in refs)


def run_scan(job: ScanJob, progress: Callable[[int], Iterator[Any]] | None = None) -> Counter:
    """Scan what is left, write it in parts, merge. Returns: the summary counts. Raises: KeyboardInterrupt
    after saving what has finished."""
    check_out(job.out)
    refs, total, before = pending_files(job)
    writer = PartWriter(parts_dir(job.out), job.out.suffix, job.flush_every)
    bar = progress(total) if progress else None
    try:
        for row, faces in results(job, refs):
            writer.add(row, faces)
            if bar is not None:
                bar.update(1)
    finally:
        writer.flush()
        if bar is not None:
            bar.close()
    counts = merge(job.out)
    counts["done before"] = before
    return counts
