"""Memory and time of ``kzoo finetune`` on large image folders: peak resident memory of the whole
process tree, wall time, epoch times, and the decoded-image cache (cold, then warm), per folder
size. Writes bench/results/folder_scale.json.

    python bench/folder_scale.py --sizes 20000 100000 --data-dir ../shared/data
    python bench/folder_scale.py --sizes 20000 100000 --data-dir ../shared/data \\
        --work-dir /tmp/kzoo-scale --runs 2
    python bench/folder_scale.py --sizes 20000 --data-dir ../shared/data --runs 1   # cold only

For each size N it makes the folder WORK_DIR/folder-N-seed0 (train/ and val/, 12 classes, 20% in
val) with bench/synthetic_folder.py, or finds it made, then runs, each time in a fresh process,

    python -m kzoo finetune WORK_DIR/folder-N-seed0 --backbone mobilenet_v2 --option alpha=0.35 \\
        --weights \\
        DATA_DIR/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5 \\
        --image-size 224 --head-epochs 1 --epochs 1 --run-dir WORK_DIR/runs/N-runR --quiet

--runs times (default 2) with KZOO_CACHE_DIR=WORK_DIR/cache-N, removed before run 1: run 1 finds
the cache empty (cold), run 2 finds what run 1 left (warm). The cache is removed after the last
run of a size (--keep-caches keeps it). Each run's output goes to WORK_DIR/logs/N-runR.log.

Memory: every 0.2 s the sum of VmRSS (/proc/PID/status) over the child and all its descendants
is taken (found through the parent ids in /proc/*/stat; the child runs in a session of its own,
so a descendant whose parent exited still counts); peak_rss_mb is its largest value. A sum of
RSS counts pages shared between processes once in each, so with several processes it overstates;
max_process_hwm_mb (the largest VmHWM of one process, the kernel's own peak) and child_maxrss_mb
(wait4's ru_maxrss: the largest single process, reaped descendants included) bound it from
below. A trace of the sum every 5 s is kept too.

From RUN/metrics.json it keeps ``timings_s`` (head_s, finetune_s, features_s, ...), ``data``
(files, decoded, reused, scan_s, decode_rate, cache, in_memory) and ``sizes``; per-epoch times
are head_s / 1 and finetune_s / 1 (one epoch each; an epoch time includes its pass over the
validation images). The summary gives, per size, the largest peak, the first run's decode rate,
whether run 2 decoded no image, and the epoch times per 1000 training images (flat if time grows
linearly with the folder); and the ratio of the largest size's fine-tune epoch time to the
smallest's (5.0 would be linear for 100000 against 20000).

The JSON is rewritten after every run, so a killed benchmark keeps what it measured; the exit
status is 1 if any run failed. WORK_DIR needs room: about 1 GB of JPEGs per 100,000 images, plus
whatever the cache holds (224x224x3 bytes, 150 kB, an image if it stores decoded pixels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from synthetic_folder import make_folder

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUTPUT = HERE / "results" / "folder_scale.json"
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
HEAD_EPOCHS, EPOCHS, IMAGE_SIZE = 1, 1, 224
INTERVAL_S = 0.2
TRACE_EVERY_S = 5.0
TAIL_LINES = 40


# --- memory of a process tree ------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, session id, start time in clock ticks) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return int(fields[1]), int(fields[3]), int(fields[19])


def _status_kb(pid: int, keys: tuple[str, ...] = ("VmRSS", "VmHWM")) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB (absent for a zombie or a vanished process)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in keys:
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


class TreeMemory:
    """Samples the summed VmRSS of a process and all its descendants: the processes under it
    by parent id, those of its session (run_measured starts it in a session of its own, so a
    descendant re-parented when its parent exits still belongs), and those seen in the tree
    before (in case one starts a session of its own)."""

    def __init__(self, root: int):
        self.root = root
        self.members: dict[int, int] = {}  # pid: start time, of every process seen in the tree

    def sample(self) -> tuple[int, int, int]:
        """(summed VmRSS in kB, processes, largest VmHWM of one process in kB)."""
        table: dict[int, tuple[int, int, int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None:
                    table[int(entry.name)] = stat
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (parent, _, _) in table.items():
            children[parent].append(pid)
        # A pid seen before counts again only with the same start time (pids are reused).
        stack = [self.root] + [pid for pid, (_, session, _) in table.items()
                               if session == self.root]
        stack += [pid for pid, start in self.members.items()
                  if pid in table and table[pid][2] == start]
        tree: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in tree or pid not in table:
                continue
            tree.add(pid)
            stack.extend(children.get(pid, ()))
        self.members = {pid: table[pid][2] for pid in tree}
        rss = hwm = 0
        for pid in tree:
            status = _status_kb(pid)
            rss += status.get("VmRSS", 0)
            hwm = max(hwm, status.get("VmHWM", 0))
        return rss, len(tree), hwm


def _kill_tree(pid: int) -> None:
    """SIGKILL the child's process group (it was started in a session of its own)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_measured(command: list[str], env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                 timeout: float | None = None, interval: float = INTERVAL_S) -> dict:
    """Run ``command``, sampling its process tree's memory every ``interval`` seconds; its
    output goes to ``log_path`` (or is discarded). Returns exit code, wall time and memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(log_path or os.devnull, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = time.perf_counter()
    memory = TreeMemory(process.pid)
    peak_kb = peak_at = processes = hwm_kb = 0
    trace: list[list[float]] = []
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - started
            rss, count, hwm = memory.sample()
            if rss > peak_kb:
                peak_kb, peak_at = rss, elapsed
            processes, hwm_kb = max(processes, count), max(hwm_kb, hwm)
            if not trace or elapsed - trace[-1][0] >= TRACE_EVERY_S:
                trace.append([round(elapsed, 1), round(rss / 1024)])
            if timeout and elapsed > timeout and not timed_out:
                timed_out = True
                _kill_tree(process.pid)
            time.sleep(interval)
    except BaseException:
        _kill_tree(process.pid)
        process.wait()
        raise
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    _kill_tree(process.pid)  # leave no stray descendants behind
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "exit_code": process.returncode, "timed_out": timed_out, "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1), "peak_rss_at_s": round(peak_at, 1),
        "max_processes": processes, "max_process_hwm_mb": round(hwm_kb / 1024, 1),
        "child_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        "rusage_children_maxrss_mb": {"before": round(before / 1024, 1),
                                      "after": round(after / 1024, 1)},
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "rss_trace_mb": trace,
    }


# --- the benchmark -----------------------------------------------------------------------------


def machine() -> dict[str, object]:
    info: dict[str, object] = {"platform": platform.platform(), "cpu": platform.processor(),
                               "cpus": os.cpu_count(), "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    return info


def source_version() -> dict[str, object]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "modified_files": len(git("status", "--porcelain").splitlines())}
    except OSError:
        return {}


def finetune_command(folder: Path, weights: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kzoo", "finetune", str(folder), "--backbone", "mobilenet_v2",
            "--model-option", "alpha=0.35", "--weights", str(weights), "--image-size", str(IMAGE_SIZE),
            "--head-epochs", str(HEAD_EPOCHS), "--epochs", str(EPOCHS), "--run-dir", str(run_dir),
            "--quiet"]


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def folder_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return round(total / 1e6, 1)


def read_metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def per_epoch(timings: dict) -> dict[str, float | None]:
    head, finetune = timings.get("head_s"), timings.get("finetune_s")
    return {"head_s": round(head / HEAD_EPOCHS, 2) if head is not None else None,
            "finetune_s": round(finetune / EPOCHS, 2) if finetune is not None else None}


def summarize(sizes: dict[str, dict]) -> dict:
    summary: dict[str, object] = {}
    epoch_times: dict[int, dict[str, float | None]] = {}
    for size, entry in sizes.items():
        runs = entry["runs"]
        ok = [run for run in runs if run["exit_code"] == 0]
        train = entry["images"]["train"]

        def mean_epoch(key: str, ok=ok) -> float | None:
            values = [run["per_epoch_s"][key] for run in ok if run["per_epoch_s"][key] is not None]
            return round(statistics.mean(values), 2) if values else None

        head, finetune = mean_epoch("head_s"), mean_epoch("finetune_s")
        epoch_times[int(size)] = {"head_s": head, "finetune_s": finetune}
        first = runs[0]["data"] if runs else {}
        second = runs[1]["data"] if len(runs) > 1 else {}
        decoded = second.get("decoded")
        peaks = [run["peak_rss_mb"] for run in runs]
        summary[size] = {
            "images": entry["images"], "runs": len(runs), "runs_ok": len(ok),
            "peak_rss_mb_max": max(peaks) if peaks else None,
            "first_run_decode_rate": first.get("decode_rate"),
            "first_run_cache": first.get("cache"),
            "second_run_cache": second.get("cache"),
            "second_run_decoded": decoded,
            "second_run_decoded_none": (decoded == 0) if decoded is not None else None,
            "head_epoch_s": head, "finetune_epoch_s": finetune,
            "head_epoch_s_per_1000_train_images":
                round(head / (train / 1000), 3) if head is not None else None,
            "finetune_epoch_s_per_1000_train_images":
                round(finetune / (train / 1000), 3) if finetune is not None else None,
        }
    measured = sorted(size for size, times in epoch_times.items() if times["finetune_s"])
    if len(measured) > 1:
        small, large = measured[0], measured[-1]
        summary["epoch_time_ratio"] = {
            "sizes": [small, large],
            "images": round(sizes[str(large)]["images"]["train"]
                            / sizes[str(small)]["images"]["train"], 3),
            "finetune": round(epoch_times[large]["finetune_s"] / epoch_times[small]["finetune_s"],
                              3),
            "head": (round(epoch_times[large]["head_s"] / epoch_times[small]["head_s"], 3)
                     if epoch_times[large]["head_s"] and epoch_times[small]["head_s"] else None),
        }
    return summary


def write_json(record: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000],
                        help="images a folder, train and val together (default 20000 100000)")
    parser.add_argument("--data-dir", default="../shared/data",
                        help="holds cifar10_jpg.zip, hymenoptera_data/ and weights/")
    parser.add_argument("--work-dir", default="/tmp/kzoo-scale",
                        help="folders, caches, runs and logs go here (default /tmp/kzoo-scale)")
    parser.add_argument("--runs", type=int, default=2, help="runs a size: 1 cold, 2 cold + warm")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic folders")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a run may take")
    parser.add_argument("--keep-caches", action="store_true",
                        help="keep each size's KZOO_CACHE_DIR after its last run")
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)

    data_dir, work_dir = Path(args.data_dir).absolute(), Path(args.work_dir).absolute()
    weights = data_dir / "weights" / WEIGHTS
    if not weights.is_file():
        parser.error(f"{weights} not found (--data-dir holds weights/{WEIGHTS})")
    output = Path(args.output)
    for name in ("runs", "logs"):
        (work_dir / name).mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {
        "benchmark": "folder_scale",
        "command": f"python bench/folder_scale.py --sizes {' '.join(map(str, args.sizes))} "
                   f"--data-dir {args.data_dir} --work-dir {args.work_dir} --runs {args.runs}",
        "kzoo_command": "python -m kzoo finetune FOLDER --backbone mobilenet_v2 --option "
                        f"alpha=0.35 --weights {args.data_dir}/weights/{WEIGHTS} --image-size "
                        f"{IMAGE_SIZE} --head-epochs {HEAD_EPOCHS} --epochs {EPOCHS} "
                        "--run-dir RUN --quiet",
        "settings": {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": IMAGE_SIZE,
                     "head_epochs": HEAD_EPOCHS, "epochs": EPOCHS, "folder_seed": args.seed,
                     "val_fraction": 0.2, "classes": 12, "sample_interval_s": INTERVAL_S},
        "machine": machine(),
        "versions": {},
        "source": source_version(),
        "date": time.strftime("%Y-%m-%d"),
        "sizes": {},
        "summary": {},
    }
    sizes: dict[str, dict] = record["sizes"]  # type: ignore[assignment]
    failed = 0
    for size in args.sizes:
        folder = work_dir / f"folder-{size}-seed{args.seed}"
        started = time.perf_counter()
        made = make_folder(folder, size, data_dir, seed=args.seed)
        entry = sizes[str(size)] = {
            "folder": str(folder), "images": made["sizes"], "folder_bytes": made["bytes"],
            "folder_content_sha1": made["content_sha1"],
            "folder_made_s": None if made["reused"] else round(time.perf_counter() - started, 1),
            "runs": [],
        }
        write_json(record, output)
        cache = work_dir / f"cache-{size}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**os.environ, "KZOO_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
        for number in range(1, args.runs + 1):
            run_dir = work_dir / "runs" / f"{size}-run{number}"
            log = work_dir / "logs" / f"{size}-run{number}.log"
            shutil.rmtree(run_dir, ignore_errors=True)
            state = "cold" if number == 1 else "warm"
            print(f"folder_scale: {size} images, run {number} ({state} cache); output in {log}",
                  flush=True)
            command = finetune_command(folder, weights, run_dir)
            measured = run_measured(command, env=env, cwd=REPO, log_path=log,
                                    timeout=args.timeout)
            metrics = read_metrics(run_dir)
            timings = metrics.get("timings_s") or {}
            run = {
                "run": number, "cache_before": state, "images": made["sizes"],
                **{key: value for key, value in measured.items() if key != "rss_trace_mb"},
                "timings_s": timings, "data": metrics.get("data") or {},
                "per_epoch_s": per_epoch(timings), "kzoo_sizes": metrics.get("sizes"),
                "val_accuracy": metrics.get("val_accuracy"),
                "cache_mb_after": folder_mb(cache), "run_dir": str(run_dir), "log": str(log),
                "rss_trace_mb": measured["rss_trace_mb"],
            }
            if measured["exit_code"] != 0:
                failed += 1
                run["output_tail"] = tail(log)
                print(f"folder_scale: run failed (exit code {measured['exit_code']}); last "
                      "lines:\n  " + "\n  ".join(run["output_tail"][-15:]), flush=True)
            if metrics.get("versions") and not record["versions"]:
                record["versions"] = metrics["versions"]
            entry["runs"].append(run)
            record["summary"] = summarize(sizes)
            write_json(record, output)
            data = run["data"]
            print(f"folder_scale: {size} images, run {number}: exit {measured['exit_code']}, "
                  f"{measured['wall_s']:.0f}s, peak RSS {measured['peak_rss_mb']:.0f} MB "
                  f"({measured['max_processes']} processes), epochs head "
                  f"{run['per_epoch_s']['head_s']}s fine-tune {run['per_epoch_s']['finetune_s']}s, "
                  f"decoded {data.get('decoded')}, reused {data.get('reused')}, "
                  f"cache {data.get('cache')}", flush=True)
        if not args.keep_caches:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"folder_scale: written to {output}" + (f"; {failed} run(s) failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
