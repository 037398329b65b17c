"""Training throughput, as ratios taken in one run: kzoo against plain Keras, TensorFlow against
JAX, XLA and op determinism on and off, and PyTorch for LeNet-5; plus how fast the input
pipeline feeds the model, and the fraction of the CPU's arithmetic peak each reaches.

    python bench/speed.py --data-dir ../shared/data                      # every workload
    python bench/speed.py lenet5_mnist --epochs 4 --repeats 3 --data-dir ../shared/data

Workloads: ``lenet5_mnist`` (54,000 images, batch 128), ``cifar_convnet_deep_cifar10`` (45,000
images, batch 96, dropout 0.5) and ``mobilenet_v2_ants_bees`` (the fine-tuning phase: 245 images
at 320x320, top 15% of MobileNetV2 unfrozen, batch 32). Augmentation is off in every variant so
that all of them do the same work; the input pipeline, augmentation included, is timed on its
own (``--pipeline-only`` re-times just that).

Every variant runs in its own process; variants are interleaved, and the order reversed on
every other repeat, so that a busy CPU hurts them alike. A variant's epoch time is the median of
its epochs after the first (the first pays for tracing and compilation). The plain Keras scripts
build the same model with ``kzoo.build`` and feed it the same cached ``tf.data`` pipeline, so
``kzoo / keras_tf`` is the cost of kzoo's training machinery (CSV log, backup, last-good-model
save, TensorBoard, op determinism). Every variant validates after each epoch, as a user's
script would. PyTorch runs from ``--torch-python`` (a venv holding torch, CPU build); a missing
interpreter or backend skips the variant and says so.

Results: bench/results/speed/WORKLOAD.json; ``python bench/readme_tables.py`` puts them in the
README. The precision table (float32 against mixed bf16, steps_per_execution on and off, and
PyTorch in both precisions) comes from

    python bench/speed.py lenet5_mnist --variants kzoo_fp32_spe1,kzoo_fp32,kzoo_bf16_spe1,kzoo_bf16,torch,torch_bf16 --results bench/results/speed/precision
    python bench/speed.py airbench_cifar10 --epochs 2 --repeats 1 --variants kzoo_fp32,kzoo_bf16,torch,torch_bf16 --results bench/results/speed/precision

(and likewise for the other workloads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "speed"
SEED = 0

WORKLOADS = {
    "lenet5_mnist": {"batch": 128, "lr": 2e-3, "model": "lenet5", "kwargs": {}},
    "cifar_convnet_deep_cifar10": {"batch": 96, "lr": 1e-3, "model": "cifar_convnet_deep",
                                   "kwargs": {"dropout": 0.5}, "augmentation": "cifar"},
    "airbench_cifar10": {"batch": 1024, "lr": 1e-3, "model": "airbench",
                         "kwargs": {"activation": "relu"}},
    "mobilenet_v2_ants_bees": {"batch": 32, "lr": 3e-5, "model": "mobilenet_v2",
                               "augmentation": "imagenet",
                               "kwargs": {"alpha": 0.35, "input_shape": (320, 320, 3)},
                               "unfreeze": 0.15, "center_crop": 0.875},
}
VARIANTS = {
    "kzoo": "kzoo.train (kzoo.fine_tune for MobileNetV2) on the TensorFlow backend, as shipped: "
            "precision auto (mixed_bfloat16 on a CPU with native bf16), steps_per_execution auto",
    "kzoo_bf16": "kzoo with --precision mixed_bfloat16 (steps_per_execution auto)",
    "kzoo_fp32": "kzoo with --precision float32 (steps_per_execution auto)",
    "kzoo_bf16_spe1": "kzoo with --precision mixed_bfloat16 --steps-per-execution 1",
    "kzoo_fp32_spe1": "kzoo with --precision float32 --steps-per-execution 1 (kzoo before both)",
    "kzoo_jax": "the same kzoo call with KERAS_BACKEND=jax",
    "keras_tf": "plain Keras on TensorFlow: same model, Adam, model.fit on cached tf.data "
                "pipelines with validation each epoch, no callbacks",
    "keras_tf_det": "keras_tf + tf.config.experimental.enable_op_determinism()",
    "keras_tf_xla": "keras_tf + compile(jit_compile=True) (XLA; Keras leaves it off on CPU)",
    "keras_jax": "keras_tf's script with KERAS_BACKEND=jax (jit-compiled by default)",
    "torch": "PyTorch eager, float32: LeNet-5 with Adam, batch 128, validation each epoch, "
             "torch.set_num_threads(cores); airbench: bench/torch_reference.py (channels-last, "
             "SGD, batch 1024, timed steps on random data, no input pipeline)",
    "torch_bf16": "the torch variant under torch.autocast('cpu', dtype=torch.bfloat16)",
}
KZOO_SETTINGS = {  # variant: (precision, steps_per_execution)
    "kzoo": (None, None), "kzoo_jax": (None, None), "kzoo_fp32": ("float32", None),
    "kzoo_bf16": ("mixed_bfloat16", None),
    "kzoo_bf16_spe1": ("mixed_bfloat16", 1), "kzoo_fp32_spe1": ("float32", 1),
}
TORCH_VARIANTS = ("torch", "torch_bf16")
JAX_VARIANTS = ("kzoo_jax", "keras_jax")


# ----------------------------------------------------------------------------- children: data
def cifar_cache(data_dir: str, cache: Path) -> Path:
    """CIFAR-10's training and validation images as kzoo decodes and splits them, saved once for
    the plain scripts (so that they do not spend a minute decoding JPEGs in every process)."""
    path = cache / "cifar10_train_validation.npz"
    if not path.is_file():
        import numpy as np

        from kzoo.data.datasets import load_dataset

        splits = load_dataset("cifar10", data_dir=data_dir, seed=SEED)
        arrays = {}
        for part in ("train", "validation"):
            x, y = zip(*getattr(splits, part).batch(4096).as_numpy_iterator())
            arrays[f"x_{part}"] = np.concatenate(x).astype("uint8")
            arrays[f"y_{part}"] = np.concatenate(y).astype("int32")
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **arrays)
        partial.replace(path)
    return path


def workload_arrays(name: str, args):
    """(images uint8 NHWC, labels int32) of the workload's training and validation splits."""
    import numpy as np

    if name == "lenet5_mnist":
        with np.load(Path(args.data_dir) / "mnist.npz") as data:
            x, y = data["x_train"][..., None], data["y_train"].astype("int32")
        order = np.random.default_rng(SEED).permutation(len(x))
        held, keep = order[:round(len(x) * 0.1)], order[round(len(x) * 0.1):]
        return x[keep], y[keep], x[held], y[held]
    if name == "cifar_convnet_deep_cifar10":
        with np.load(cifar_cache(args.data_dir, Path(args.cache))) as data:
            return data["x_train"], data["y_train"], data["x_validation"], data["y_validation"]
    from kzoo.data.datasets import image_folder

    splits = image_folder(Path(args.data_dir) / "hymenoptera_data", (320, 320),
                          center_crop=WORKLOADS[name]["center_crop"], progress=False)
    train, validation = splits.examples["train"], splits.examples["validation"]
    return train.read_all(), train.labels, validation.read_all(), validation.labels


# ---------------------------------------------------------------------------- children: timing
def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        """Epoch wall times of every fit call, one list per call."""

        def __init__(self):
            super().__init__()
            self.fits: list[list[float]] = []

        def on_train_begin(self, logs=None):
            self.fits.append([])

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.fits[-1].append(time.perf_counter() - self._start)

    return EpochTimer()


def child_kzoo(name, args, precision=None, steps_per_execution=None):
    import keras
    import yaml

    import kzoo

    timer = epoch_timer(keras)
    original_fit = keras.Model.fit

    def fit(self, *a, callbacks=None, **kw):  # the timer goes last, after kzoo's own callbacks
        return original_fit(self, *a, callbacks=list(callbacks or []) + [timer], **kw)

    keras.Model.fit = fit
    scratch = Path(tempfile.mkdtemp(prefix="kzoo-speed-"))
    recipe = yaml.safe_load((ROOT / "zoo_configs" / f"{name}.yaml").read_text())
    recipe["augmentation"] = "none"
    path = scratch / f"{name}_noaug.yaml"
    path.write_text(yaml.safe_dump(recipe))
    if "finetune" in recipe:
        result = kzoo.fine_tune(recipe=str(path), epochs=args.epochs, head_epochs=2,
                                precision=precision, data_dir=args.data_dir,
                                run_dir=scratch / "run", verbose=0)
    else:
        result = kzoo.train(str(path), epochs=args.epochs, data_dir=args.data_dir,
                            precision=precision, steps_per_execution=steps_per_execution,
                            run_dir=scratch / "run", verbose=0)
    return {"epoch_times": timer.fits[-1], "n_train": result.metrics.get("sizes", {}).get("train"),
            "accuracy": result.metrics.get("test_accuracy", result.metrics.get("val_accuracy")),
            "precision": result.metrics["precision"],
            "steps_per_execution": result.metrics.get("steps_per_execution")}


def child_keras(name, args, determinism=False, xla=False):
    import keras
    import numpy as np
    import tensorflow as tf

    import kzoo

    spec = WORKLOADS[name]
    keras.utils.set_random_seed(SEED)
    if determinism:
        tf.config.experimental.enable_op_determinism()
    x, y, x_val, y_val = workload_arrays(name, args)

    def pipeline(images, labels, shuffle):
        data = tf.data.Dataset.from_tensor_slices((images, labels)).map(
            lambda image, label: (tf.cast(image, tf.float32), label)).cache()
        data = data.shuffle(len(images), seed=SEED) if shuffle else data
        return data.batch(spec["batch"]).prefetch(tf.data.AUTOTUNE)

    if name == "mobilenet_v2_ants_bees":
        from kzoo.training.phases import unfreeze_top

        weights = (Path(args.data_dir) / "weights"
                   / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")
        model = kzoo.build(spec["model"], num_classes=2, weights=str(weights), **spec["kwargs"])
        unfreeze_top(model, spec["unfreeze"])
    else:
        model = kzoo.build(spec["model"], **spec["kwargs"])
    model.compile(optimizer=keras.optimizers.Adam(spec["lr"]), jit_compile=xla or "auto",
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = epoch_timer(keras)
    history = model.fit(pipeline(x, y, True), validation_data=pipeline(x_val, y_val, False),
                        epochs=args.epochs, callbacks=[timer], verbose=0)
    return {"epoch_times": timer.fits[-1], "n_train": len(x),
            "accuracy": float(np.asarray(history.history["accuracy"][-1]))}


def child_torch(name, args, bf16=False):
    import torch
    from torch import nn

    spec = WORKLOADS[name]
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else __import__("contextlib").nullcontext())
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(SEED)
    x, y, x_val, _ = workload_arrays(name, args)  # uint8 N,28,28,1 -> N,1,28,28
    x, x_val = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous() for a in (x, x_val))
    y = torch.from_numpy(y).long()
    model = nn.Sequential(
        nn.ZeroPad2d(2), nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    loss_fn = nn.CrossEntropyLoss()
    times, correct = [], 0
    for _ in range(args.epochs):
        start = time.perf_counter()
        order, correct = torch.randperm(len(x)), 0
        for i in range(0, len(x), spec["batch"]):
            index = order[i:i + spec["batch"]]
            images, labels = x[index].float() / 255.0, y[index]  # the rescaling Keras does in-model
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                logits = model(images)
                loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == labels).sum().item()  # as Keras's running accuracy
        model.eval()
        with torch.no_grad(), autocast:  # validation, as model.fit(validation_data=...) does
            for i in range(0, len(x_val), spec["batch"]):
                model(x_val[i:i + spec["batch"]].float() / 255.0)
        model.train()
        times.append(time.perf_counter() - start)
    return {"epoch_times": times, "n_train": len(x), "accuracy": correct / len(x),
            "precision": "bfloat16 autocast" if bf16 else "float32",
            "versions": {"torch": torch.__version__, "threads": torch.get_num_threads()}}


def torch_reference(name: str, variant: str, args) -> dict:
    """airbench in PyTorch: bench/torch_reference.py's timed steps (about an epoch's images)."""
    spec = WORKLOADS[name]
    steps = max(5, 20_000 // spec["batch"])
    command = [args.torch_python, str(HERE.parent / "torch_reference.py"), "--model", "airbench",
               "--activation", spec["kwargs"]["activation"], "--batch-size", str(spec["batch"]),
               "--precision", "bfloat16" if variant == "torch_bf16" else "float32",
               "--steps", str(steps), "--warmup", "3", "--threads", str(os.cpu_count() or 1)]
    proc = subprocess.run(command, check=False, capture_output=True, text=True,
                          timeout=args.timeout, cwd=ROOT)
    if proc.returncode:
        return {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-1500:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"images_per_s": result["images_per_s"], "precision": result["precision"],
            "timed_steps": result["steps"], "versions": {"torch": result["torch"]}}


def child_pipeline(name, args):
    """Images a second of kzoo's input pipeline: the first scan of the image files (decoding
    into a fresh image store), then one epoch of batches with and without the augmentation its
    recipes use (every epoch), held in memory (the default at this size) and streamed from the
    store (as a folder larger than the memory limit is)."""
    import os
    import tempfile

    from kzoo.data.augment import augmentation
    from kzoo.data.datasets import image_folder
    from kzoo.data.pipeline import make_pipeline

    spec = WORKLOADS[name]
    out: dict = {"decode_workers": os.environ.get("KZOO_DECODE_WORKERS", os.cpu_count())}
    if name == "lenet5_mnist":  # arrays in memory: nothing to decode
        from kzoo.data.pipeline import Examples

        x, y, _, _ = workload_arrays(name, args)
        examples = Examples.from_arrays(x, y)
    else:
        if name == "cifar_convnet_deep_cifar10":
            from kzoo.data.datasets import _extract_once

            folder = _extract_once(Path(args.data_dir) / "cifar10_jpg.zip")
            size, crop = (32, 32), None
        else:
            folder = Path(args.data_dir) / "hymenoptera_data"
            size, crop = (320, 320), WORKLOADS[name]["center_crop"]
        os.environ["KZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="kzoo-bench-cache-")
        splits = image_folder(folder, size, center_crop=crop, seed=SEED, progress=False)
        examples = splits.examples["train"]
        out.update(decode_images_per_s=splits.scan.stats.decode_rate,
                   decoded=splits.scan.stats.decoded)
    augment = augmentation(spec.get("augmentation", "none"), SEED)
    for key, with_augment, limit in (("epoch_images_per_s", False, None),
                                     ("augmented_epoch_images_per_s", True, None),
                                     ("streamed_augmented_epoch_images_per_s", True, "0")):
        if limit is None:
            os.environ.pop("KZOO_IN_MEMORY_LIMIT_MB", None)
        else:
            os.environ["KZOO_IN_MEMORY_LIMIT_MB"] = limit
        pipeline = make_pipeline(examples, spec["batch"], shuffle_seed=SEED,
                                 augment=augment if with_augment else None)
        for _ in pipeline:  # a first pass warms up (and fills the page cache)
            pass
        start = time.perf_counter()
        for _ in pipeline:
            pass
        out[key] = len(examples) / (time.perf_counter() - start)
    out["augmentation"] = spec.get("augmentation", "none")
    return out


def run_child_main(args):
    name, variant = args.workload, args.child
    if variant in KZOO_SETTINGS:
        result = child_kzoo(name, args, *KZOO_SETTINGS[variant])
    elif variant in TORCH_VARIANTS:
        result = child_torch(name, args, bf16=variant == "torch_bf16")
    elif variant == "pipeline":
        result = child_pipeline(name, args)
    else:
        result = child_keras(name, args, determinism=variant == "keras_tf_det",
                             xla=variant == "keras_tf_xla")
    if variant not in TORCH_VARIANTS:
        import keras

        result.setdefault("versions", {})["backend"] = keras.backend.backend()
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------- parent
def train_flops_per_image(name: str) -> float:
    """Training FLOPs an image, by kzoo.training.flops (conv and dense layers, 3x the forward pass)."""
    import kzoo
    from kzoo.training.flops import training_flops

    spec = WORKLOADS[name]
    return float(training_flops(kzoo.build(spec["model"], **spec["kwargs"],
                                           **({"weights": None} if "unfreeze" in spec else {}))))


# FLOPs a core can do a cycle, per kind of arithmetic: AVX-512 fp32 (2 FMA pipes x 16 lanes x 2),
# AVX-512 bf16 dot products (VDPBF16PS: 2 pipes x 32 pairs x 2) and AMX bf16 tiles (1,024
# multiply-adds a cycle).
FLOPS_PER_CYCLE = {"fp32_avx512": 64, "bf16_avx512": 128, "bf16_amx": 2048}


def peak_flops(precision: str) -> tuple[float, dict[str, object]]:
    """The arithmetic peak of this CPU for ``precision``: cores x the clock /proc/cpuinfo states
    x the FLOPs a cycle of the widest unit that computes it (AMX where the CPU has it)."""
    from kzoo.training.precision import cpu_flags

    mhz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    cores, mhz, flags = os.cpu_count() or 1, mhz or 2600.0, cpu_flags()
    if "bfloat16" in precision:
        unit = "bf16_amx" if "amx_bf16" in flags else "bf16_avx512"
    else:
        unit = "fp32_avx512"
    return (cores * FLOPS_PER_CYCLE[unit] * mhz * 1e6,
            {"cores": cores, "mhz": mhz, "unit": unit, "flops_per_cycle": FLOPS_PER_CYCLE[unit]})


def machine() -> dict[str, object]:
    info: dict[str, object] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    except OSError:
        return info
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "CPU(s)", "Hypervisor vendor"):
            info[key.strip()] = value.strip()
    info["avx512f"] = "avx512f" in out
    return info


def run_child(python: str, name: str, variant: str, args) -> dict:
    if variant in TORCH_VARIANTS and name == "airbench_cifar10":
        return torch_reference(name, variant, args)
    command = [python, str(HERE), "--child", variant, "--workload", name, "--data-dir",
               args.data_dir, "--epochs", str(args.epochs), "--cache", args.cache]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
               KERAS_BACKEND="jax" if variant in JAX_VARIANTS else "tensorflow")
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                              timeout=args.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    wall = time.perf_counter() - start
    line = next((l for l in reversed(proc.stdout.splitlines()) if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        return {"error": f"exit status {proc.returncode}", "stderr_tail": proc.stderr[-1500:]}
    return {**json.loads(line[len("RESULT "):]), "process_wall_s": round(wall, 1)}


def available(variant: str, name: str, args) -> str | None:
    """Why the variant cannot run here, or None."""
    if variant in TORCH_VARIANTS:
        if name not in ("lenet5_mnist", "airbench_cifar10"):
            return "the PyTorch scripts are LeNet-5 and airbench only"
        if not Path(args.torch_python).exists():
            return f"no interpreter {args.torch_python} (pass --torch-python)"
    if variant in JAX_VARIANTS:
        try:
            import jax  # noqa: F401
        except ImportError:
            return "jax is not installed (pip install -e .[jax])"
    return None


def summarise(name: str, raw: dict[str, list[dict]], pipeline: dict | None) -> dict:
    flops = train_flops_per_image(name)
    summary = {}
    # Every variant trains on the same images; the kzoo call does not report how many.
    n = next((r["n_train"] for runs in raw.values() for r in runs if r.get("n_train")), None)
    for variant, runs in raw.items():
        good = [r for r in runs if "error" not in r]
        steady = [t for r in good for t in r.get("epoch_times", [])[1:]]
        rates = [r["images_per_s"] for r in good if "images_per_s" in r]  # timed steps
        if not steady and not (rates and n):
            continue
        epoch = statistics.median(steady) if steady else n / statistics.median(rates)
        precision = good[0].get("precision") or "float32"
        peak, peak_info = peak_flops(precision)
        summary[variant] = {
            "epoch_s": round(epoch, 3), "images_per_s": round(n / epoch, 1), "n_train": n,
            "precision": precision, "steps_per_execution": good[0].get("steps_per_execution"),
            "fraction_of_peak": round(n * flops / epoch / peak, 4), "peak": peak_info,
            "accuracy": [r.get("accuracy") for r in good],
        }
        if steady:
            summary[variant].update(
                first_epoch_s=round(statistics.median(r["epoch_times"][0] for r in good), 3),
                steady_epochs_s=[round(t, 3) for t in steady])
    ratios = {}
    pairs = [("kzoo", "keras_tf"), ("keras_tf_det", "keras_tf"), ("keras_tf_xla", "keras_tf"),
             ("keras_jax", "keras_tf"), ("kzoo_jax", "kzoo"), ("keras_tf", "torch"),
             ("kzoo", "torch"), ("keras_tf_xla", "torch"), ("keras_jax", "torch"),
             ("kzoo_bf16", "kzoo_fp32"), ("kzoo_bf16_spe1", "kzoo_fp32_spe1"),
             ("kzoo_fp32", "kzoo_fp32_spe1"), ("kzoo_bf16", "kzoo_bf16_spe1"),
             ("kzoo", "kzoo_fp32_spe1"), ("kzoo", "torch_bf16"), ("kzoo_bf16", "torch_bf16"),
             ("kzoo_fp32", "torch")]
    for a, b in pairs:
        if a in summary and b in summary:
            ratios[f"{a} / {b}"] = round(summary[a]["epoch_s"] / summary[b]["epoch_s"], 3)
    return {"summary": summary, "ratios": ratios, "pipeline": pipeline,
            "flops": {"train_flops_per_image": flops,
                      "note": "2 FLOPs a multiply-add; a training step counted as 3x forward "
                              "(an upper bound where layers are frozen); each variant's fraction "
                              "of peak is against its own precision's peak"}}


def bench_workload(name: str, variants: list[str], args) -> dict:
    pythons = {v: args.torch_python if v in TORCH_VARIANTS else sys.executable for v in variants}
    skipped = {v: why for v in variants if (why := available(v, name, args))}
    variants = [v for v in variants if v not in skipped]
    raw: dict[str, list[dict]] = {v: [] for v in variants}
    started = time.time()
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            result = run_child(pythons[variant], name, variant, args)
            raw[variant].append(result)
            shown = result.get("error") or (
                [round(t, 2) for t in result["epoch_times"]] if "epoch_times" in result
                else f"{result['images_per_s']:.0f} images/s (timed steps)")
            print(f"{name} [{repeat + 1}/{args.repeats}] {variant}: {shown}", flush=True)
            if "error" in result:
                print(result.get("stderr_tail", ""), flush=True)
    pipeline = None
    if "augmentation" in WORKLOADS[name] and not args.skip_pipeline:  # the image-file workloads
        pipeline = run_child(sys.executable, name, "pipeline", args)
        print(f"{name} pipeline: {pipeline}", flush=True)
    doc = {
        "workload": name, "settings": {**WORKLOADS[name], "epochs": args.epochs,
                                       "repeats": args.repeats},
        "command": shlex.join(["python", "bench/speed.py", name, "--epochs", str(args.epochs),
                               "--repeats", str(args.repeats), "--variants", ",".join(variants),
                               "--data-dir", args.data_dir_given]
                              + (["--skip-pipeline"] if args.skip_pipeline else [])
                              + (["--results", str(Path(args.results).resolve().relative_to(ROOT))]
                                 if Path(args.results).resolve() != RESULTS else [])),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1), "machine": machine(),
        "versions": versions(raw), "variants": {v: VARIANTS[v] for v in variants},
        "skipped": skipped, **summarise(name, raw, pipeline), "raw": raw,
    }
    return doc


def versions(raw) -> dict[str, str]:
    found = {}
    for module in ("kzoo", "keras", "tensorflow", "jax", "numpy"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    for runs in raw.values():
        for run in runs:
            found.update({k: str(v) for k, v in run.get("versions", {}).items() if k == "torch"})
    return found


def refresh_pipeline(name: str, args) -> dict:
    """Measure the input pipeline again and update it in the workload's existing JSON."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run `python bench/speed.py {name}` first")
    doc = json.loads(path.read_text())
    doc["pipeline"] = run_child(sys.executable, name, "pipeline", args)
    doc["pipeline_command"] = shlex.join(["python", "bench/speed.py", name, "--pipeline-only",
                                          "--data-dir", args.data_dir_given])
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", default=[])
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=3, help="epochs a variant (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs a variant (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--torch-python", default="/work/torch-venv/bin/python",
                        help="a Python with torch installed (CPU build), for the torch variant")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds a child process")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kzoo-speed-cache"))
    parser.add_argument("--results", default=str(RESULTS),
                        help=f"folder for WORKLOAD.json (default {RESULTS.relative_to(ROOT)}; the "
                        "precision comparison lives in its precision/ folder)")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="time only the training variants, not the input pipeline")
    parser.add_argument("--pipeline-only", action="store_true",
                        help="only measure the input pipeline again, in the existing JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir_given, args.data_dir = args.data_dir, str(Path(args.data_dir).resolve())
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.child:
        run_child_main(args)
        return 0
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    unknown_variants = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown or unknown_variants:
        parser.error(f"unknown workload(s) {unknown} or variant(s) {unknown_variants}; expected "
                     f"workloads from {list(WORKLOADS)} and variants from {list(VARIANTS)}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not counted")
    args.workloads = args.workloads or list(WORKLOADS)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.pipeline_only:
        for name in args.workloads:
            if "augmentation" in WORKLOADS[name]:
                print(f"{name} pipeline: {refresh_pipeline(name, args)['pipeline']}")
        return 0
    for name in args.workloads:
        doc = bench_workload(name, args.variants.split(","), args)
        path = results / f"{name}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\n{name}: images/s " + ", ".join(
            f"{v} {s['images_per_s']:.0f}" for v, s in doc["summary"].items()))
        print("  ratios of epoch time: " + ", ".join(f"{k} {r:.2f}" for k, r in doc["ratios"].items()))
        print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
