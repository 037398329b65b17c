"""How fast the ``kzoo`` command answers: ``kzoo --help``, ``kzoo list`` and ``kzoo info
lenet5``, each a whole new process (``python -m kzoo ...``), timed several times; the median and
the spread go to bench/results/cli_speed.json.

    python bench/cli_speed.py --repeats 7

Listing and describing read the model index (kzoo/models/index.json), so none of these imports
TensorFlow; a run that trains imports it when it starts training.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = {"kzoo --help": ["--help"], "kzoo list": ["list"], "kzoo info lenet5": ["info", "lenet5"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=str(HERE / "results" / "cli_speed.json"))
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():  # interleaved, so a busy moment hurts all alike
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "kzoo", *argv], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(round(time.perf_counter() - started, 3))
    record = {
        "benchmark": "cli_speed",
        "command": f"python bench/cli_speed.py --repeats {args.repeats}",
        "seconds": times,
        "median_s": {name: statistics.median(values) for name, values in times.items()},
        "max_s": {name: max(values) for name, values in times.items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    for name, median in record["median_s"].items():
        print(f"{name:20} median {median:.2f}s  (max {record['max_s'][name]:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
