"""HAM10000 (Tschandl et al. 2018): 10,015 dermatoscopic images, 7 diagnoses.

Several images show the same lesion, so the lesion id is returned as `groups` and the
splitter keeps a lesion's images together (otherwise validation scores leak).
"""

from __future__ import annotations

import collections
import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tlc_jax.data._files import missing_file_error
from tlc_jax.data.dataset import ImageDataset
from tlc_jax.data.decode import decode_dataset

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
METADATA_FILE = "HAM10000_metadata.csv"
_REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")


def read_ham10000_metadata(
    csv_path: str | os.PathLike,
) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]:
    """(image ids, labels, lesion group codes, lesion ids) from the metadata CSV.

    Group codes index the sorted unique lesion ids, so they are stable across runs.
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{str(csv_path)!r} lacks column(s) {missing}; its header is {reader.fieldnames}"
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"{str(csv_path)!r} has no rows")
    index = {name: i for i, name in enumerate(HAM10000_CLASSES)}
    unknown = sorted({r["dx"] for r in rows} - set(index))
    if unknown:
        raise ValueError(
            f"{str(csv_path)!r}: unknown dx value(s) {unknown}; expected one of "
            f"{list(HAM10000_CLASSES)}"
        )
    image_ids = [r["image_id"].strip() for r in rows]
    if len(set(image_ids)) != len(image_ids):
        dupes = sorted(i for i, n in collections.Counter(image_ids).items() if n > 1)[:10]
        raise ValueError(f"{str(csv_path)!r}: repeated image_id(s) {dupes}")
    labels = np.asarray([index[r["dx"]] for r in rows], dtype=np.int32)
    lesion_ids, groups = np.unique([r["lesion_id"].strip() for r in rows], return_inverse=True)
    return image_ids, labels, groups.astype(np.int64), tuple(lesion_ids.tolist())


def load_ham10000(
    root: str | os.PathLike,
    *,
    image_dirs: Sequence[str | os.PathLike] | None = None,
    image_size: int | Sequence[int] = 224,
    keep_aspect: bool = False,
    skip_corrupt: bool = False,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
) -> ImageDataset:
    """HAM10000 from `root`: `HAM10000_metadata.csv` and `<image_id>.jpg` files.

    Images are looked up in `image_dirs` (default: `root` and each of its subfolders,
    e.g. `HAM10000_images_part_1` and `_part_2`). Labels index `HAM10000_CLASSES`
    (the dx column); groups are lesion-id codes.
    """
    root = Path(root)
    csv_path = root / METADATA_FILE
    if not csv_path.is_file():
        raise missing_file_error("HAM10000 metadata", [METADATA_FILE], root)
    image_ids, labels, groups, _ = read_ham10000_metadata(csv_path)

    folders = (
        [Path(d) for d in image_dirs]
        if image_dirs is not None
        else [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    )
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"HAM10000 image folder {str(folder)!r} does not exist")
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() == ".jpg" and stem not in found:
                    found[stem] = entry.path
    missing = [i for i in image_ids if i not in found]
    if missing:
        shown = ", ".join(f"{m}.jpg" for m in missing[:10])
        raise FileNotFoundError(
            f"{len(missing)} HAM10000 image(s) listed in {METADATA_FILE} not found ({shown}"
            f"{', ...' if len(missing) > 10 else ''}) in the folder(s) {[str(f) for f in folders]}"
        )
    paths = [found[i] for i in image_ids]
    return decode_dataset(
        paths,
        labels,
        HAM10000_CLASSES,
        groups,
        image_size=image_size,
        keep_aspect=keep_aspect,
        skip_corrupt=skip_corrupt,
        num_workers=num_workers,
        cache_dir=cache_dir,
        cache_name="ham10000",
        base=root,
    )
