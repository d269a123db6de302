"""The same photo stored twice: pairs of images whose perceptual hashes (`imagehash.phash`, 64 bits of the DCT of a
32 x 32 greyscale copy) are at most a few bits apart. A re-encoded, resized or recompressed copy keeps its hash; a
different photo of a similar scene almost never does, which the embeddings' nearest neighbours cannot tell apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm


def phashes(dataset_dir: Path, paths: Sequence[str]) -> np.ndarray:
    """Each image's 64-bit perceptual hash, as an unsigned integer."""
    out = np.empty(len(paths), dtype=np.uint64)
    for row, path in enumerate(tqdm(paths, desc="perceptual hashes", unit="img", disable=None)):
        with Image.open(dataset_dir / path) as image:
            bits = imagehash.phash(image).hash.flatten()
        out[row] = int("".join("1" if b else "0" for b in bits), 2)
    return out


def close_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int, int]]:
    """Every pair (i, j, bits apart) with i < j whose hashes differ in at most `max_bits` bits, closest first."""
    pairs = []
    for i in range(len(hashes) - 1):
        apart = np.bitwise_count(hashes[i + 1 :] ^ hashes[i])
        pairs += [(i, i + 1 + int(j), int(apart[j])) for j in np.flatnonzero(apart <= max_bits)]
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))
