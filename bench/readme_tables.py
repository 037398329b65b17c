"""Regenerate the generated tables of README.md and docs/*.md: models (from the registry),
results (from bench/results/*.json), speed (from bench/results/speed/*.json) and the other
measurements in bench/results/.

    python bench/readme_tables.py          # rewrite the tables in README.md and docs/*.md
    python bench/readme_tables.py --check  # exit 1 if any of them is out of date

Each table lies between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers, in whichever
of those files holds them (one or several); a table whose markers no file holds is an error.

Result rows group runs by recipe and overrides: mean test accuracy over the seeds run (and the
spread when there are several), the expected figure and its source, and the command that
reproduces it. The fine-tuning row comes from bench/finetune_ants_bees.py (validation accuracy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def marked_files(root: Path = ROOT) -> list[Path]:
    """The files whose generated tables this script keeps: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


OPTION_FLAGS = {"learning_rate": "--learning-rate", "batch_size": "--batch-size"}


def load_results(folder: Path = HERE / "results") -> dict[tuple, list[dict]]:
    """Runs grouped by (recipe, overrides)."""
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "recipe" in record and "test_accuracy" in record:
            overrides = tuple(sorted(record.get("overrides", {}).items()))
            grouped[(record["recipe"], overrides)].append(record)
    return grouped


def spread(values: list[float]) -> str:
    shown = f"{statistics.mean(values):.2%}"
    return shown + (f" ± {statistics.stdev(values):.2%}" if len(values) > 1 else "")


def table(grouped: dict[tuple, list[dict]], results: Path = HERE / "results") -> str:
    """One row per recipe and overrides; the expected figure and its source come from the recipe."""
    from kzoo.recipes.zoo import load_recipe

    lines = [
        "| recipe | test accuracy | seeds | epochs | minutes (each) | expected | source | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (recipe, overrides), records in sorted(grouped.items()):
        # the whole run (data, fitting, training, evaluation) where recorded, else the training
        minutes = statistics.mean(r.get("total_time_s", r["wall_time_s"]) for r in records) / 60
        recipe_file = load_recipe(recipe)
        expected = recipe_file.expected_accuracy
        seeds = " ".join(str(r["seed"]) for r in sorted(records, key=lambda r: r["seed"]))
        flags = "".join(f" {OPTION_FLAGS[key]} {value:g}" for key, value in overrides)
        label = f"`{recipe}`" + "".join(f", {key.replace('_', ' ')} {value:g}" for key, value in overrides)
        command = f"`python bench/accuracy.py {recipe}{flags} --seeds {seeds} --data-dir ../shared/data`"
        if overrides:  # the recipe's figure and source are for its own settings, not these
            expected, reference = None, "the recipe above, one setting changed"
        else:
            reference = recipe_file.reference
        accuracy = spread([r["test_accuracy"] for r in records])
        if records[0].get("tta", "none") != "none":
            plain = spread([r["test_accuracy_without_tta"] for r in records])
            accuracy += f" ({records[0]['tta']} TTA; {plain} without)"
        if records[0].get("precision", "float32") != "float32":
            accuracy += f", {records[0]['precision']}"
        lines.append(
            f"| {label} | {accuracy} | {len(records)} | "
            f"{records[0]['epochs']} | {minutes:.1f} | {f'{expected:.1%}' if expected else '-'} | "
            f"{reference} | {command} |"
        )
    for finetune in sorted(results.glob("finetune_*.json")):
        doc = json.loads(finetune.read_text())
        settings, runs = doc["settings"], doc["runs"]
        tta = settings.get("tta", "none")
        lines.append(
            f"| `{settings['recipe']}` | {spread([r['val_accuracy'] for r in runs])} (validation"
            f"{', ' + tta + ' TTA' if tta != 'none' else ''}) | "
            f"{len(runs)} | {settings['finetune']['head_epochs']} + {settings['epochs']} | "
            f"{doc['mean_wall_time_s'] / 60:.1f} | {settings['expected_accuracy']:.1%} | "
            f"{doc['reference']['source']}: {doc['reference']['model']}, "
            f"{doc['reference']['val_accuracy']:.0%} | `{doc['command']}` |"
        )
    return "\n".join(lines)


SPEED_VARIANTS = ("kzoo", "keras_tf", "keras_tf_det", "keras_tf_xla", "keras_jax", "kzoo_jax", "torch")


def speed_table(folder: Path = HERE / "results" / "speed") -> str:
    """One row per variant, one column per workload: images a second, epoch time as a ratio to
    plain Keras/TF's in the same run, and the fraction of the CPU's fp32 peak; then the commands
    and the input pipeline's rates."""
    docs = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    lines = [
        "| variant | " + " | ".join(f"`{doc['workload']}`" for doc in docs) + " |",
        "|---|" + "---|" * len(docs),
    ]
    for variant in SPEED_VARIANTS:
        cells = []
        for doc in docs:
            row, base = doc["summary"].get(variant), doc["summary"].get("keras_tf")
            if row is None:
                cells.append("-")
                continue
            ratio = f" · {row['epoch_s'] / base['epoch_s']:.2f}" if base else ""
            cells.append(f"{row['images_per_s']:,.0f}/s{ratio} · {row['fraction_of_peak']:.0%}")
        if any(cell != "-" for cell in cells):
            lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    notes = [""]
    for doc in docs:
        notes.append(f"- `{doc['workload']}`: `{doc['command']}`")
        pipeline = doc.get("pipeline") or {}
        if "epoch_images_per_s" in pipeline:
            fastest = max(s["images_per_s"] for s in doc["summary"].values())
            streamed = pipeline.get("streamed_augmented_epoch_images_per_s")
            from_disk = f" ({streamed:,.0f}/s streamed from the disk cache)" if streamed else ""
            decode = (f"image files decode at {pipeline['decode_images_per_s']:,.0f}/s (once, on "
                      "the first run); " if pipeline.get("decode_images_per_s") else "")
            notes.append(
                f"  - input: {decode}a cached epoch streams at {pipeline['epoch_images_per_s']:,.0f}/s, "
                f"{pipeline['augmented_epoch_images_per_s']:,.0f}/s with the `{pipeline['augmentation']}` "
                f"augmentation{from_disk}; the model trains at up to {fastest:,.0f}/s "
                f"(`{doc.get('pipeline_command', doc['command'])}`)"
            )
    return "\n".join(lines + notes)


PRECISION_COLUMNS = (  # (variant, heading)
    ("kzoo_fp32_spe1", "float32, 1 step a call (kzoo before)"),
    ("kzoo_fp32", "float32, steps auto"),
    ("kzoo_bf16_spe1", "bf16, 1 step a call"),
    ("kzoo_bf16", "bf16, steps auto"),
    ("torch", "PyTorch float32"),
    ("torch_bf16", "PyTorch bf16 autocast"),
)


def precision_table(folder: Path = HERE / "results" / "speed" / "precision") -> str:
    """One row per workload: images a second in each precision and steps-per-execution setting,
    PyTorch's in both precisions, the ratios that matter, and each variant's fraction of its own
    precision's arithmetic peak."""
    docs = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    lines = ["| workload | " + " | ".join(heading for _, heading in PRECISION_COLUMNS)
             + " | speed of bf16 + steps auto against kzoo before | kzoo bf16 / PyTorch bf16 (epoch time) |",
             "|---|" + "---|" * (len(PRECISION_COLUMNS) + 2)]
    for doc in docs:
        summary = doc["summary"]
        cells = [f"{summary[v]['images_per_s']:,.0f}/s · {summary[v]['fraction_of_peak']:.1%}"
                 if v in summary else "-" for v, _ in PRECISION_COLUMNS]
        before = "kzoo_fp32_spe1" if "kzoo_fp32_spe1" in summary else "kzoo_fp32"
        speedup = (f"{summary[before]['epoch_s'] / summary['kzoo_bf16']['epoch_s']:.2f}x"
                   if "kzoo_bf16" in summary and before in summary else "-")
        torch = (f"{summary['kzoo_bf16']['epoch_s'] / summary['torch_bf16']['epoch_s']:.2f}"
                 if "kzoo_bf16" in summary and "torch_bf16" in summary else "-")
        lines.append(f"| `{doc['workload']}` | " + " | ".join(cells) + f" | {speedup} | {torch} |")
    lines.append("")
    lines += [f"- `{doc['workload']}`: `{doc['command']}`" for doc in docs]
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def folder_table() -> str:
    """The image-folder scale table, from bench/results/folder_scale.json (and the decoding
    comparison from bench/results/decode_workers.json)."""
    doc = json.loads((RESULTS / "folder_scale.json").read_text())
    lines = [("| folder | run | cache | images decoded | decode rate | head epoch | fine-tune epoch "
             "| per 1,000 training images (head + fine-tune) | peak memory (process tree) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for size, entry in sorted(doc["sizes"].items(), key=lambda item: int(item[0])):
        for run in entry.get("runs", []):
            data, epochs = run.get("data") or {}, run.get("per_epoch_s") or {}
            train = (run.get("images") or {}).get("train") or 1
            head, tune = epochs.get("head_s"), epochs.get("finetune_s")
            rate = f"{data['decode_rate']:,.0f}/s" if data.get("decode_rate") else "-"
            per_1000 = f"{1000 * (head + tune) / train:.1f} s" if head and tune else "-"
            lines.append(
                f"| {int(size):,} images | {run['run']} | {data.get('cache', '?')} | "
                f"{data.get('decoded', '?'):,} | {rate} | {head:.0f} s | {tune:.0f} s | "
                f"{per_1000} | {run['peak_rss_mb'] / 1024:.2f} GB |")
    lines += ["", (f"`{doc['command']}`; each run is `{doc['kzoo_command']}` "
              f"({doc['settings']['classes']} classes, {doc['settings']['val_fraction']:.0%} in "
              "val/, one head epoch and one fine-tune epoch, each with its pass over the "
              "validation images).")]
    decode = RESULTS / "decode_workers.json"
    if decode.is_file():
        workers = json.loads(decode.read_text())
        ratios = ", ".join(f"{name} {value:.2f}x" for name, value in
                           workers["ratios_to_1_thread"].items() if name != "1 thread")
        lines += ["", (f"Decoding (read, hash, decode, frame to 224 px) against one thread: "
                  f"{ratios} (`{workers['command']}`).")]
    return "\n".join(lines)


DISTRIBUTED_ROWS = (
    ("jax_1", "JAX, 1 process"),
    ("jax_2", "JAX, 2 processes (gloo, loopback)"),
    ("tf_1", "TensorFlow, 1 device"),
    ("tf_2dev", "TensorFlow, MirroredStrategy over 2 CPU devices"),
)


def distributed_table() -> str:
    """Images a second and peak memory of one process against two, from
    bench/results/distributed.json."""
    doc = json.loads((RESULTS / "distributed.json").read_text())
    baselines = {"jax_2": "jax_1", "tf_2dev": "tf_1"}
    lines = ["| run | images/s | against one | peak memory (process tree) |", "|---|---|---|---|"]
    for variant, heading in DISTRIBUTED_ROWS:
        runs = doc["runs"].get(variant)
        if not runs:
            continue
        speed = doc["images_per_s"][variant]
        base = baselines.get(variant)
        ratio = f"{speed / doc['images_per_s'][base]:.2f}x" if base in doc["images_per_s"] else "-"
        memory = max(run["peak_rss_mb"] for run in runs) / 1024
        lines.append(f"| {heading} | {speed:,.0f} | {ratio} | {memory:.1f} GB |")
    lines += ["", (f"`{doc['command']}` (`{doc['recipe']}`, batch {doc['batch_size']}, "
                   f"{doc['cpus']} cores; images/s from the time per step of epoch 2).")]
    return "\n".join(lines)


def label_audit_table() -> str:
    """Precision and recall of ``kzoo audit --labels`` on folders with known flipped labels,
    from bench/results/label_audit.json."""
    doc = json.loads((RESULTS / "label_audit.json").read_text())
    lines = [("| folder | images | flipped | precision at N = flipped | recall at N | flagged "
              "in all | recall of all flagged | suggested label right | audit time |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in doc["results"].items():
        lines.append(f"| {name} | {row['images']:,} | {row['flipped']} | "
                     f"{row['precision_at_n']:.2f} | {row['recall_at_n']:.2f} | {row['flagged']} "
                     f"| {row['recall_all']:.2f} | {row['suggested_is_true_class']:.0%} | "
                     f"{row['seconds']:.0f} s |")
    lines += ["", (f"`{doc['command']}` ({doc['fraction_flipped']:.0%} of each folder's labels "
                   f"flipped, seed {doc['seed']}; {doc['backbone']}, {doc['folds']} folds).")]
    return "\n".join(lines)


def lr_auto_table() -> str:
    """Each recipe at its own learning rate against ``--lr auto``, from
    bench/results/lr_auto.json."""
    doc = json.loads((RESULTS / "lr_auto.json").read_text())
    lines = ["| recipe | recipe's rate | accuracy | `--lr auto` rate | accuracy | held-out split |",
             "|---|---|---|---|---|---|"]
    for name, row in doc["results"].items():
        given, auto = row["recipe_rate"], row["lr_auto"]
        lines.append(f"| `{name}` | {given['learning_rate']:.3g} | {given['accuracy']:.2%} | "
                     f"{auto['learning_rate']:.3g} | {auto['accuracy']:.2%} | "
                     f"{given['accuracy_split']} |")
    lines += ["", f"`{doc['command']}` (seed 0, one run each)."]
    return "\n".join(lines)


def generated_tables() -> dict[str, str]:
    """Each marker's name and the table that belongs between its markers."""
    from kzoo.models.catalog import model_table

    return {
        "models": model_table(),
        "results": table(load_results()),
        "folders": folder_table(),
        "precision": precision_table(),
        "distributed": distributed_table(),
        "label_audit": label_audit_table(),
        "lr_auto": lr_auto_table(),
        "speed": speed_table(),
    }


def has_markers(text: str, name: str) -> bool:
    return f"<!-- {name}:start -->" in text


def updated_text(text: str, tables: dict[str, str]) -> str:
    """``text`` with each table it holds markers for replaced by ``tables``'s."""
    for name, body in tables.items():
        if has_markers(text, name):
            text = replace_between_markers(text, name, body)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    tables = generated_tables()
    texts = {path: path.read_text() for path in marked_files()}
    homeless = [name for name in tables if not any(has_markers(text, name) for text in texts.values())]
    if homeless:
        print(f"no file holds the markers of the {', '.join(homeless)} table(s): put "
              "<!-- NAME:start --> and <!-- NAME:end --> in README.md or a docs/*.md page")
        return 1
    stale = {path: updated for path, text in texts.items()
             if (updated := updated_text(text, tables)) != text}
    names = ", ".join(str(path.relative_to(ROOT)) for path in stale)
    if args.check:
        if stale:
            print(f"generated tables out of date in {names}: run python bench/readme_tables.py")
            return 1
        return 0
    for path, updated in stale.items():
        path.write_text(updated)
    print(f"updated the generated tables in {names}" if stale else "every generated table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
