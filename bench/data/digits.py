#!/usr/bin/python3
"""Writes scikit-learn's 8x8 handwritten digits (UCI optdigits test part: 1797 images, 10 classes,
values 0..16) upscaled to SIDE px as MNIST-style IDX files or as an ImageFolder of PNGs, for
`webdino train --data DIR`.

Needs Debian's python3-sklearn (the data ship inside it: sklearn/datasets/data/digits.csv.gz) and
python3-pil; run it with /usr/bin/python3 so that Debian's packages are the ones imported.

Pixels: v * 255 / 16, white digit on black (as MNIST), then a bicubic resize from 8 to SIDE px
(PIL), so strokes are smooth rather than 4-px blocks. Split: stratified, 25 % held out
(sklearn.model_selection.train_test_split, random_state 0): 1347 training and 450 held-out images.

Usage: /usr/bin/python3 bench/data/digits.py OUT_DIR [--format idx|folder] [--side 32]
  idx (default): OUT_DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
  folder:        OUT_DIR/train/<digit>/<index>.png and OUT_DIR/test/<digit>/<index>.png
"""
import argparse
import gzip
import os
import struct

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX of unsigned bytes: 0, 0, type 0x08, ndims, big-endian uint32 sizes, data row-major."""
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(struct.pack('>I', d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def upscale(images: np.ndarray, side: int) -> np.ndarray:
    grey = np.clip(np.round(images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(g, mode='L').resize((side, side), Image.BICUBIC)) for g in grey])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out')
    p.add_argument('--format', choices=['idx', 'folder'], default='idx')
    p.add_argument('--side', type=int, default=32)
    a = p.parse_args()
    d = load_digits()
    x = upscale(d.images, a.side)
    y = d.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    os.makedirs(a.out, exist_ok=True)
    for split, xs, ys in (('train', x_tr, y_tr), ('test', x_te, y_te)):
        if a.format == 'idx':
            prefix = 'train' if split == 'train' else 't10k'
            with open(os.path.join(a.out, f'{prefix}-images-idx3-ubyte.gz'), 'wb') as f:
                f.write(gzip.compress(idx_bytes(xs), mtime=0))
            with open(os.path.join(a.out, f'{prefix}-labels-idx1-ubyte.gz'), 'wb') as f:
                f.write(gzip.compress(idx_bytes(ys), mtime=0))
        else:
            for i, (img, label) in enumerate(zip(xs, ys)):
                folder = os.path.join(a.out, split, str(label))
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(img, mode='L').save(os.path.join(folder, f'{i:04d}.png'))
        print(f'{split}: {len(ys)} images of {a.side}x{a.side}')


if __name__ == '__main__':
    main()
