"""A pretrained model's pooled backbone features of a split, computed once: the head phase of
fine-tuning trains on them, and the label audit's cross-validated linear heads too.

>>> extractor = pooled_features_model(model)          # images in, the pooled features out
>>> features = backbone_features(extractor, examples, 32, None, scratch / "train.f16")
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from kzoo.data.pipeline import ArrayRows, Examples, in_memory_limit, make_pipeline
from kzoo.data.rows import RowFile
from kzoo.models.parts import classifier_parts


def pooled_features_model(model: keras.Model) -> keras.Model:
    """The part of a zoo model up to its pooled backbone features (its declared pooling)."""
    return classifier_parts(model, need_backbone=False).features_model()


def backbone_features(extractor: keras.Model, examples: Examples, batch_size: int, augment,
                      path: Path) -> Examples:
    """The ``extractor``'s features of ``examples`` (augmented if ``augment``), as float16
    rows: in memory when they are small, else in a file at ``path``."""
    dim = int(extractor.output_shape[-1])
    count = len(examples)
    if count * dim * 2 <= in_memory_limit():
        rows, out = None, np.empty((count, dim), dtype=np.float16)
    else:
        rows, out = RowFile.create(path, (dim,), np.float16, count), None
    start = 0
    for images, _ in make_pipeline(examples, batch_size, augment=augment):
        values = np.asarray(extractor.predict_on_batch(images), dtype=np.float16)
        if rows is None:
            out[start:start + len(values)] = values
        else:
            rows.write_rows(range(start, start + len(values)), values)
        start += len(values)
    source = ArrayRows(out) if rows is None else rows
    return Examples(source, np.arange(count, dtype=np.int64), examples.labels, examples.paths)
