"""Near-duplicates: the same picture twice, re-saved, resized, mirrored or relit.

Exact hashes only catch byte-identical files. Two measures find the rest:

* **pixels**, on each image's 64x64 grey copy, at two scales (a mirrored copy is compared
  too). *Detail*: the copy minus its local 5x5 mean; *structure*: a 3x3 blur minus a
  9x9 blur (edges and shapes, without pixel noise). Each is normalized, so brightness,
  contrast and smooth lighting drop out, and two images are compared by correlation. A
  pair is a near-duplicate when the detail correlates at 0.9+, or when the structure
  correlates at 0.95+ and the detail at least at 0.4 (a resize of a small, noisy image
  smooths its pixel noise away; relighting changes which fine detail shows). On the
  shared datasets, the 68 known flower copies score detail 0.96-1.0 against at most 0.56
  for any other pair, and steel textures at most 0.86; on magnetic tiles the rule groups
  the photos of one tile under its different lightings (groups of up to 7). It needs no
  network, so it also runs before the split and with ``--weights none``.
* **backbone features** (when given): cosine similarity of pooled MobileNetV2 features,
  judged against each image's own neighbourhood (CSLS: ``2 cos(a,b) - r_a - r_b``, with
  ``r`` the mean similarity to its 2nd..6th nearest neighbours; the nearest may be the
  copy itself). A raw cosine threshold fails where all images look alike (every
  magnetic tile is a grey tile, cosines above 0.95 everywhere); a pair that stands out
  from both images' neighbourhoods is a copy: cropped, shifted or mirrored versions
  that the pixel measures miss.

Features alone are a weak witness. On oxford_flowers17 (MobileNetV2 at 224, the 68
copies listed in shared/datasets/README.md), the pixel rule reports 69 pairs: all 68
copies and 0242/0243 (detail 0.994, a copy the list lacks), and the feature rule adds 28
pairs that no pixel measure confirms: none of them is the same picture (two tulips
of one bed, the same flower from two angles), with CSLS up to 0.46 and cosine up to
0.96. A pair found by features only is therefore a copy (``Pair.same_picture``) only
above a stricter bar (``FEATURE_SAME_CSLS``, ``FEATURE_SAME_COSINE``, above every one of
those 28); below it the pair is reported as *similar*: shown, never grouped.

Pairs become groups (connected components), merged with the groups of identical files
(same sha256) into one group id per item (``duplicate_groups``, ``copy_groups``). The split
(``trainer.split``) keeps each group on one side; the data doctor (``trainer.doctor``)
reports the pairs and groups and keeps each group in one fold. Both call this module, so
neither depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter

from trainer.dataset import Dataset

DETAIL_THRESHOLD = 0.9  # detail correlation alone
STRUCTURE_THRESHOLD = 0.95  # structure correlation...
DETAIL_FLOOR = 0.4  # ...with at least this detail correlation
FEATURE_CSLS = 0.2  # neighbourhood-relative feature similarity
FEATURE_COSINE_FLOOR = 0.8  # and never below this raw cosine
FEATURE_SAME_CSLS = 0.5  # a features-only pair is a copy only at or above both of these
FEATURE_SAME_COSINE = 0.97
NEIGHBOURS = 5
BLOCK = 512  # rows per block: memory stays O(BLOCK x N) whatever the dataset size
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Pair:
    """Two items (``i < j``) judged near-duplicates, with the evidence."""

    i: int
    j: int
    detail: float  # pixel detail correlation (in the better orientation)
    structure: float  # pixel structure correlation (same orientation)
    cosine: float | None = None  # raw feature cosine, when features were given
    csls: float | None = None
    by_pixels: bool = False
    by_features: bool = False

    @property
    def same_picture(self) -> bool:
        """A copy: confirmed by pixels, or by features above the stricter bar."""
        if self.by_pixels:
            return True
        return (
            self.by_features
            and self.csls is not None
            and self.cosine is not None
            and self.csls >= FEATURE_SAME_CSLS
            and self.cosine >= FEATURE_SAME_COSINE
        )

    @property
    def found_by(self) -> list[str]:
        return [
            name
            for name, hit in (("pixels", self.by_pixels), ("features", self.by_features))
            if hit
        ]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-6)


def pixel_maps(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm (detail, structure) maps of each image (N x 4096 each)."""
    grey = small.astype(np.float32) @ _GREY
    blur = {k: uniform_filter(grey, size=(1, k, k), mode="nearest") for k in (3, 5, 9)}
    return _unit_rows(grey - blur[5]), _unit_rows(blur[3] - blur[9])


def _mirror(maps: np.ndarray, side: int) -> np.ndarray:
    """The maps of the mirrored images (a mirror commutes with the filters)."""
    return maps.reshape(len(maps), side, side)[:, :, ::-1].reshape(len(maps), -1)


def _upper_pairs(sim_rows: np.ndarray, start: int, threshold: float) -> list[tuple[int, int]]:
    """(i, j) with i < j among a block of similarity rows at or above ``threshold``."""
    rows, cols = np.nonzero(sim_rows >= threshold)
    keep = cols > rows + start
    return list(zip((rows[keep] + start).tolist(), cols[keep].tolist(), strict=True))


def _is_copy(detail: np.ndarray, structure: np.ndarray) -> np.ndarray:
    return (detail >= DETAIL_THRESHOLD) | (
        (structure >= STRUCTURE_THRESHOLD) & (detail >= DETAIL_FLOOR)
    )


def pixel_pairs(small: np.ndarray) -> dict[tuple[int, int], tuple[float, float]]:
    """Pairs judged copies by their pixels: ``{(i, j): (detail, structure)}``, i < j."""
    detail, structure = pixel_maps(small)
    side = small.shape[1]
    views = [(detail, structure), (_mirror(detail, side), _mirror(structure, side))]
    found: dict[tuple[int, int], tuple[float, float]] = {}
    for start in range(0, len(detail), BLOCK):
        d_rows, s_rows = detail[start : start + BLOCK], structure[start : start + BLOCK]
        for d_other, s_other in views:
            d_sim, s_sim = d_rows @ d_other.T, s_rows @ s_other.T
            rows, cols = np.nonzero(_is_copy(d_sim, s_sim))
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                i = r + start
                if c > i:
                    value = (float(d_sim[r, c]), float(s_sim[r, c]))
                    if (i, c) not in found or value[0] > found[(i, c)][0]:
                        found[(i, c)] = value
    return found


def pixel_similarity(small: np.ndarray, pairs: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """(detail, structure) correlations of given pairs, in the better orientation."""
    if not pairs:
        return []
    idx = sorted({k for p in pairs for k in p})
    detail, structure = pixel_maps(small[idx])
    side = small.shape[1]
    d_mirror, s_mirror = _mirror(detail, side), _mirror(structure, side)
    pos = {k: n for n, k in enumerate(idx)}
    out = []
    for i, j in pairs:
        a, b = pos[i], pos[j]
        direct = (float(detail[a] @ detail[b]), float(structure[a] @ structure[b]))
        mirrored = (float(detail[a] @ d_mirror[b]), float(structure[a] @ s_mirror[b]))
        out.append(max(direct, mirrored))
    return out


def feature_pairs(
    pooled: np.ndarray,
    csls_threshold: float = FEATURE_CSLS,
    floor: float = FEATURE_COSINE_FLOOR,
    neighbours: int = NEIGHBOURS,
) -> dict[tuple[int, int], tuple[float, float]]:
    """Pairs whose features stand out from both images' neighbourhoods: (cosine, csls)."""
    n = len(pooled)
    k = min(neighbours, n - 2)  # neighbours 2..k+1 of each image
    if k < 1:
        return {}
    unit = pooled.astype(np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-6)
    radius = np.empty(n, dtype=np.float32)
    for start in range(0, n, BLOCK):
        sim = unit[start : start + BLOCK] @ unit.T
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf
        nearest = np.partition(sim, -(k + 1), axis=1)[:, -(k + 1) :]
        # Skip the closest neighbour: it may be the very copy being looked for.
        radius[start : start + len(sim)] = np.sort(nearest, axis=1)[:, :k].mean(axis=1)
    found: dict[tuple[int, int], tuple[float, float]] = {}
    for start in range(0, n, BLOCK):
        sim = unit[start : start + BLOCK] @ unit.T
        csls = 2 * sim - radius[start : start + len(sim), None] - radius[None, :]
        csls[sim < floor] = -np.inf
        for i, j in _upper_pairs(csls, start, csls_threshold):
            found[(i, j)] = (float(sim[i - start, j]), float(csls[i - start, j]))
    return found


def find_pairs(small: np.ndarray, pooled: np.ndarray | None = None) -> list[Pair]:
    """All near-duplicate pairs, by pixels and (when given) by features."""
    by_pixels = pixel_pairs(small)
    by_features = feature_pairs(pooled) if pooled is not None else {}
    feature_only = [p for p in by_features if p not in by_pixels]
    pixel_sims = dict(zip(feature_only, pixel_similarity(small, feature_only), strict=True))
    pixel_sims |= by_pixels
    pairs = []
    for key in sorted(set(by_pixels) | set(by_features)):
        cos, csls = by_features.get(key, (None, None))
        if pooled is not None and cos is None:
            a, b = pooled[key[0]], pooled[key[1]]
            cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        pairs.append(
            Pair(
                key[0],
                key[1],
                *pixel_sims[key],
                cos,
                csls,
                by_pixels=key in by_pixels,
                by_features=key in by_features,
            )
        )
    return pairs


def components(pairs: list[Pair], n: int) -> list[list[int]]:
    """Connected groups of copies (2+ items each), largest first; *similar* pairs
    (features only, below the stricter bar) join no group."""
    parent = list(range(n))
    pairs = [p for p in pairs if p.same_picture]

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for p in pairs:
        parent[find(p.i)] = find(p.j)
    groups: dict[int, list[int]] = {}
    for a in range(n):
        groups.setdefault(find(a), []).append(a)
    found = [g for g in groups.values() if len(g) > 1]
    return sorted(found, key=lambda g: (-len(g), g[0]))


def near_duplicate_groups(small: np.ndarray, pooled: np.ndarray | None = None) -> list[list[int]]:
    """Groups of item indices that are copies of one another (2+ items each)."""
    return components(find_pairs(small, pooled), len(small))


def duplicate_groups(ds: Dataset, extra: list[list[int]] | None = None) -> np.ndarray:
    """A group id per item: identical files share one (``extra`` merges more groups).

    ``extra`` lets a near-duplicate finder add groups of item indices.
    """
    parent = list(range(len(ds.items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, it in enumerate(ds.items):
        j = first.setdefault(it.sha256, i)
        parent[find(i)] = find(j)
    for group in extra or []:
        for i in group[1:]:
            parent[find(i)] = find(group[0])
    return np.array([find(i) for i in range(len(ds.items))])


def copy_groups(ds: Dataset, small: np.ndarray) -> np.ndarray:
    """A group id per item that joins identical files and near-duplicates.

    ``small`` holds the items' small copies (``trainer.image_set.collect(ds).small``).
    """
    return duplicate_groups(ds, extra=near_duplicate_groups(small))
