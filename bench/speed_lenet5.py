"""LeNet-5 training throughput on MNIST: kzoo.train vs plain Keras (TF, +/- op determinism,
+/- per-epoch validation) vs PyTorch vs Keras on JAX, as ratios taken in one run.

Every variant runs in its own subprocess; variants are interleaved and repeated so that a busy
CPU hurts them alike. Steady epoch time = median of the epochs after the first (the first pays for
tracing/compilation), taken by a callback (for kzoo.train one is slipped in by wrapping
``keras.Model.fit`` in the child process; kzoo itself is untouched).

    .venv/bin/python bench/speed_lenet5.py --data-dir ../shared/data --epochs 3 --repeats 2

PyTorch runs from --torch-python (a separate venv holding torch, CPU build), Keras-on-JAX from
--jax-python (a separate venv holding keras + jax); a missing interpreter skips the variant.
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
RESULT = ROOT / "bench" / "results" / "speed" / "lenet5_mnist.json"
BATCH = 128
LR = 2e-3
SEED = 0
VALIDATION_SPLIT = 0.1  # kzoo's default: 54,000 train / 6,000 validation

# LeNet-5 multiply-adds per 28x28 image (padded to 32x32): conv out_h*out_w*out_c*k*k*in_c, dense in*out.
MACS = {
    "c1 conv 6@5x5": 28 * 28 * 6 * 5 * 5 * 1,
    "c3 conv 16@5x5": 10 * 10 * 16 * 5 * 5 * 6,
    "c5 conv 120@5x5": 1 * 1 * 120 * 5 * 5 * 16,
    "f6 dense 84": 120 * 84,
    "out dense 10": 84 * 10,
}


# ------------------------------------------------------------------------------ data (all children)
def load_mnist(data_dir):
    """The same 54,000 training images kzoo trains on (kzoo's seeded split) and the 6,000 held out."""
    import numpy as np

    with np.load(Path(data_dir) / "mnist.npz") as data:
        x, y = data["x_train"], data["y_train"].astype("int64")
    # Same shape of split as kzoo (a seeded permutation); the image count is what matters here.
    order = np.random.default_rng(SEED).permutation(len(x))
    n_val = round(len(x) * VALIDATION_SPLIT)
    keep, held = order[n_val:], order[:n_val]
    return x[keep], y[keep], x[held], y[held]


def epoch_timer_cls(keras):
    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer


# ------------------------------------------------------------------------------------ children
def child_kzoo(args):
    import keras
    import yaml

    import kzoo

    timer = epoch_timer_cls(keras)()
    original_fit = keras.Model.fit

    def fit(self, *a, callbacks=None, **kw):  # appended last: its on_epoch_end follows kzoo's saves
        return original_fit(self, *a, callbacks=list(callbacks or []) + [timer], **kw)

    keras.Model.fit = fit
    tmp = Path(tempfile.mkdtemp(prefix="kzoo-speed-"))
    recipe = yaml.safe_load((ROOT / "zoo_configs" / "lenet5_mnist.yaml").read_text())
    recipe["augmentation"] = "none"
    path = tmp / "lenet5_mnist_noaug.yaml"
    path.write_text(yaml.safe_dump(recipe))
    t0 = time.perf_counter()
    result = kzoo.train(str(path), epochs=args.epochs, data_dir=args.data_dir,
                        run_dir=str(tmp / "run"), verbose=0)
    total = time.perf_counter() - t0
    return {"epoch_times": timer.times, "train_call_s": total,
            "fit_wall_s": result.metrics.get("wall_time_s"),
            "n_train": 54000, "test_accuracy": result.metrics.get("test_accuracy"),
            "recipe": recipe}


def child_keras_tf(args, determinism, validation):
    import keras
    import tensorflow as tf

    import kzoo

    keras.utils.set_random_seed(SEED)
    if determinism:
        tf.config.experimental.enable_op_determinism()
    x, y, xv, yv = load_mnist(args.data_dir)
    x, xv = x[..., None], xv[..., None]
    y, yv = y.astype("int32"), yv.astype("int32")
    train = (tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(len(x), seed=SEED)
             .batch(BATCH).prefetch(tf.data.AUTOTUNE))
    val = None
    if validation:
        val = tf.data.Dataset.from_tensor_slices((xv, yv)).cache().batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model = kzoo.build("lenet5")  # raw 0-255 input, Rescaling + pad-to-32 inside, as in kzoo.train
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = epoch_timer_cls(keras)()
    t0 = time.perf_counter()
    hist = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[timer], verbose=0)
    return {"epoch_times": timer.times, "fit_wall_s": time.perf_counter() - t0, "n_train": len(x),
            "final_accuracy": hist.history["accuracy"][-1]}


def child_keras_jax(args):
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    from keras import layers

    keras.utils.set_random_seed(SEED)
    x, y, _, _ = load_mnist(args.data_dir)
    x, y = x[..., None].astype("float32"), y.astype("int32")
    # The same layers as kzoo.build("lenet5") (kzoo is not installed in this venv).
    inputs = keras.Input((28, 28, 1))
    h = layers.Rescaling(1 / 255.0)(inputs)
    h = layers.ZeroPadding2D(2)(h)
    h = layers.Conv2D(6, 5, activation="relu")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(16, 5, activation="relu")(h)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(120, 5, activation="relu")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(84, activation="relu")(h)
    outputs = layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(LR), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    timer = epoch_timer_cls(keras)()
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=BATCH, epochs=args.epochs, shuffle=True, callbacks=[timer],
                     verbose=0)
    import jax

    return {"epoch_times": timer.times, "fit_wall_s": time.perf_counter() - t0, "n_train": len(x),
            "final_accuracy": hist.history["accuracy"][-1],
            "versions": {"keras": keras.__version__, "jax": jax.__version__}}


def child_torch(args, flush_denormal=False):
    import torch
    from torch import nn

    torch.set_num_threads(2)
    if flush_denormal:  # TF runs its kernels with flush-to-zero/denormals-are-zero; torch does not
        torch.set_flush_denormal(True)
    torch.manual_seed(SEED)
    x, y, _, _ = load_mnist(args.data_dir)
    x = torch.from_numpy(x).unsqueeze(1)  # uint8 N,1,28,28; scaled and padded inside the model
    y = torch.from_numpy(y)

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.ZeroPad2d(2), nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
                nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

        def forward(self, images):
            return self.body(images.float() / 255.0)

    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    times, correct = [], 0
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        correct = 0
        model.train()
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            correct += (logits.argmax(1) == yb).sum().item()  # like Keras's running accuracy
        times.append(time.perf_counter() - start)
    return {"epoch_times": times, "fit_wall_s": time.perf_counter() - t0, "n_train": len(x),
            "final_accuracy": correct / len(x),
            "versions": {"torch": torch.__version__, "threads": torch.get_num_threads()}}


CHILDREN = {
    "kzoo_train": child_kzoo,
    "keras_tf": lambda a: child_keras_tf(a, determinism=False, validation=False),
    "keras_tf_det": lambda a: child_keras_tf(a, determinism=True, validation=False),
    "keras_tf_det_val": lambda a: child_keras_tf(a, determinism=True, validation=True),
    "keras_jax": child_keras_jax,
    "torch": child_torch,
    "torch_ftz": lambda a: child_torch(a, flush_denormal=True),
}
DESCRIPTIONS = {
    "kzoo_train": "kzoo.train, recipe lenet5_mnist with augmentation: none (cosine Adam, "
                  "validation each epoch, CSVLogger/BackupAndRestore/model save/TensorBoard)",
    "keras_tf": "plain Keras/TF: kzoo.build('lenet5'), Adam 2e-3, tf.data cache/shuffle/batch/prefetch",
    "keras_tf_det": "as keras_tf + tf.config.experimental.enable_op_determinism()",
    "keras_tf_det_val": "as keras_tf_det + validation on the 6,000 held-out images each epoch",
    "keras_jax": "plain Keras on the JAX backend, same layers, model.fit on numpy arrays",
    "torch": "PyTorch eager, same LeNet-5, Adam 2e-3, torch.set_num_threads(2)",
    "torch_ftz": "as torch + torch.set_flush_denormal(True) (TF flushes denormals to zero)",
}


# -------------------------------------------------------------------------------------- parent
def peak_flops():
    """2 cores x 2 FMA pipes x 16 fp32 lanes (512-bit) x 2 FLOPs x clock (from lscpu/cpuinfo)."""
    mhz = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    mhz = mhz or 2600.0
    per_cycle = 2 * 16 * 2  # two 512-bit FMA pipes per core (Zen 5 server / AVX-512), fp32
    return cores * per_cycle * mhz * 1e6, {"cores": cores, "mhz": mhz, "fp32_flops_per_cycle_per_core": per_cycle}


def machine():
    info = {"platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Core(s) per socket", "Thread(s) per core",
                               "CPU family", "Model", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
        info["avx512f"] = "avx512f" in out
    except OSError:
        pass
    return info


def run_child(python, variant, args, timeout):
    cmd = [python, str(HERE), "--child", variant, "--data-dir", args.data_dir,
           "--epochs", str(args.epochs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if variant == "keras_jax":
        env["KERAS_BACKEND"] = "jax"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)
    wall = time.perf_counter() - t0
    line = next((l for l in reversed(proc.stdout.splitlines()) if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        return {"error": f"rc={proc.returncode}", "stderr_tail": proc.stderr[-2000:],
                "process_wall_s": wall}
    out = json.loads(line[len("RESULT "):])
    out["process_wall_s"] = wall
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(CHILDREN))
    parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    parser.add_argument("--jax-python", default="/tmp/jaxvenv/bin/python")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = CHILDREN[args.child](args)
        print("RESULT " + json.dumps(result))
        return

    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is excluded)")
    pythons = {v: sys.executable for v in CHILDREN}
    pythons["torch"] = pythons["torch_ftz"] = args.torch_python
    pythons["keras_jax"] = args.jax_python
    variants = [v for v in args.variants.split(",") if v]
    skipped = {v: f"no interpreter {pythons[v]}" for v in variants if not Path(pythons[v]).exists()}
    variants = [v for v in variants if v not in skipped]

    raw = {v: [] for v in variants}
    started = time.time()
    for rep in range(args.repeats):
        order = variants if rep % 2 == 0 else variants[::-1]  # interleaved, alternating order
        for v in order:
            print(f"[rep {rep + 1}/{args.repeats}] {v} ...", flush=True)
            res = run_child(pythons[v], v, args, args.timeout)
            raw[v].append(res)
            if "error" in res:
                print(f"   failed: {res['error']}\n{res['stderr_tail']}", flush=True)
            else:
                print(f"   epochs {[round(t, 2) for t in res['epoch_times']]} s, "
                      f"process {res['process_wall_s']:.1f} s", flush=True)

    flops_fwd = 2 * sum(MACS.values())
    flops_train = 3 * flops_fwd
    peak, peak_info = peak_flops()
    summary = {}
    for v in variants:
        steady = [t for r in raw[v] if "error" not in r for t in r["epoch_times"][1:]]
        firsts = [r["epoch_times"][0] for r in raw[v] if "error" not in r]
        if not steady:
            continue
        n = next(r["n_train"] for r in raw[v] if "error" not in r)
        s = statistics.median(steady)
        summary[v] = {"steady_epoch_s": s, "first_epoch_s": statistics.median(firsts),
                      "min_steady_epoch_s": min(steady),
                      "images_per_s": n / s, "n_train": n,
                      "gflop_per_s": n * flops_train / s / 1e9,
                      "fraction_of_peak": n * flops_train / s / peak,
                      "steady_epoch_samples": steady}
    base = summary.get("keras_tf")
    for v, s in summary.items():
        if base:
            s["epoch_time_vs_keras_tf"] = s["steady_epoch_s"] / base["steady_epoch_s"]
        if "torch" in summary:
            s["epoch_time_vs_torch"] = s["steady_epoch_s"] / summary["torch"]["steady_epoch_s"]
    ratios = {}

    def ratio(name, a, b):
        if a in summary and b in summary:
            ratios[name] = summary[a]["steady_epoch_s"] / summary[b]["steady_epoch_s"]

    ratio("kzoo_train / keras_tf", "kzoo_train", "keras_tf")
    ratio("kzoo_train / keras_tf_det", "kzoo_train", "keras_tf_det")
    ratio("kzoo_train / keras_tf_det_val", "kzoo_train", "keras_tf_det_val")
    ratio("keras_tf_det / keras_tf", "keras_tf_det", "keras_tf")
    ratio("keras_tf_det_val / keras_tf_det", "keras_tf_det_val", "keras_tf_det")
    ratio("keras_tf / torch", "keras_tf", "torch")
    ratio("keras_tf_det / torch", "keras_tf_det", "torch")
    ratio("kzoo_train / torch", "kzoo_train", "torch")
    ratio("torch_ftz / torch", "torch_ftz", "torch")
    ratio("keras_tf / torch_ftz", "keras_tf", "torch_ftz")
    ratio("keras_jax / keras_tf", "keras_jax", "keras_tf")
    ratio("keras_jax / torch", "keras_jax", "torch")

    print(f"\nLeNet-5 on MNIST, batch {BATCH}, {args.epochs} epochs x {args.repeats} repeats; "
          f"steady epoch = median of epochs 2..{args.epochs}")
    print(f"{'variant':18s} {'images/s':>9s} {'s/epoch':>8s} {'1st ep s':>8s} {'GFLOP/s':>8s} "
          f"{'%peak':>6s} {'vs keras_tf':>11s} {'vs torch':>8s} {'min s/ep':>8s}")
    for v, s in summary.items():
        print(f"{v:18s} {s['images_per_s']:9.0f} {s['steady_epoch_s']:8.2f} {s['first_epoch_s']:8.2f} "
              f"{s['gflop_per_s']:8.2f} {100 * s['fraction_of_peak']:6.2f} "
              f"{s.get('epoch_time_vs_keras_tf', float('nan')):11.2f} "
              f"{s.get('epoch_time_vs_torch', float('nan')):8.2f} {s['min_steady_epoch_s']:8.2f}")
    print("\nratios of steady epoch time:")
    for k, r in ratios.items():
        print(f"  {k:32s} {r:.3f}")
    print(f"\nFLOPs: {flops_train / 1e6:.2f} MFLOP/image train (fwd {flops_fwd / 1e6:.3f} x3); "
          f"peak assumed {peak / 1e9:.0f} GFLOP/s ({peak_info})")
    for v, why in skipped.items():
        print(f"skipped {v}: {why}")

    versions = {}
    for mod in ("tensorflow", "keras", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            versions[mod] = f"unavailable: {exc}"
    for v in ("torch", "torch_ftz", "keras_jax"):
        for r in raw.get(v, []):
            if "versions" in r:
                versions[v] = r["versions"]
                break
    doc = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(), "versions": versions,
        "settings": {"batch_size": BATCH, "learning_rate": LR, "epochs": args.epochs,
                     "repeats": args.repeats, "train_images": 54000, "validation_images": 6000,
                     "steady_epoch": f"median of epochs 2..{args.epochs} over all repeats"},
        "variants": {v: DESCRIPTIONS[v] for v in variants}, "skipped": skipped,
        "flops": {"macs_per_image": MACS, "forward_flops_per_image": flops_fwd,
                  "train_flops_per_image": flops_train,
                  "train_flops_per_epoch": flops_train * 54000,
                  "peak_flops_assumed": peak, "peak_assumption": peak_info,
                  "note": "2 FLOPs per MAC, train = 3x forward; validation passes not counted"},
        "summary": summary, "ratios": ratios, "raw": raw,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
