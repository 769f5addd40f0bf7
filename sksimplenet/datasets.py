"""Datasets: a deterministic synthetic defect generator, and loaders for public layouts."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

TEXTURES = ("stripes", "grid", "noise", "dots", "object")
DEFECTS = ("scratch", "blob", "hole")


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "stripes":
        angle = rng.uniform(-0.15, 0.15) + np.pi / 4
        phase = rng.uniform(0, 2 * np.pi)
        base = 0.5 + 0.3 * np.sin(2 * np.pi * 8 * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    elif kind == "grid":
        phase = rng.uniform(0, 2 * np.pi, size=2)
        base = 0.5 + 0.15 * (np.sin(2 * np.pi * 6 * xx + phase[0]) + np.sin(2 * np.pi * 6 * yy + phase[1]))
    elif kind == "noise":
        base = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 32, mode="wrap")
        base = 0.5 + 0.2 * base / base.std()
    elif kind == "dots":
        base = np.full((size, size), 0.35, np.float32)
        for _ in range(12):
            cy, cx = rng.uniform(0, 1, size=2)
            base += 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.03**2))
    elif kind == "object":
        cy, cx = 0.5 + rng.uniform(-0.03, 0.03, size=2)
        radius = np.hypot(yy - cy, xx - cx)
        base = np.where(radius < 0.3, 0.7 - 0.3 * radius, 0.25).astype(np.float32)
    else:
        raise ValueError(f"Unknown texture {kind!r}; choose from {TEXTURES}")
    return base + rng.normal(0, 0.02, size=(size, size))


def _defect_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.2, 0.35)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        return (np.abs(along) < length / 2) & (np.abs(across) < max(1.5 / size, 0.015))
    radius = rng.uniform(0.06, 0.12)
    if kind == "blob":
        ry, rx = radius, radius * rng.uniform(0.6, 1.0)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if kind == "hole":
        return np.hypot(yy - cy, xx - cx) < radius * 0.7
    raise ValueError(f"Unknown defect {kind!r}; choose from {DEFECTS}")


def make_synthetic(
    n_normal: int = 20,
    n_anomalous: int = 10,
    *,
    texture: str = "stripes",
    defects=DEFECTS,
    size: int = 128,
    random_state: int = 0,
):
    """Generate normal texture images and defective copies with pixel masks.

    Normal images are one texture with random phase and pixel noise. Anomalous images are
    normal images with one defect painted in: a thin scratch, a blob of another
    intensity, or a dark hole.

    Parameters
    ----------
    n_normal, n_anomalous : int
        Numbers of normal and anomalous images (normal ones come first).
    texture : {"stripes", "grid", "noise", "dots", "object"}
    defects : sequence of {"scratch", "blob", "hole"}
        Defect kinds, used in turn.
    size : int
        Side of the square images, in pixels.
    random_state : int
        Seed; the same seed gives the same images.

    Returns
    -------
    images : ndarray of shape (n_normal + n_anomalous, size, size, 3), uint8
    labels : ndarray of shape (n_normal + n_anomalous,)
        +1 normal, -1 anomalous.
    masks : ndarray of shape (n_normal + n_anomalous, size, size), bool
        True on defect pixels.
    """
    rng = np.random.default_rng(random_state)
    n = n_normal + n_anomalous
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    labels = np.where(np.arange(n) < n_normal, 1, -1)
    for i in range(n):
        gray = _texture(texture, size, rng)
        if i >= n_normal:
            kind = defects[(i - n_normal) % len(defects)]
            mask = _defect_mask(kind, size, rng)
            value = {"scratch": 0.95, "blob": float(rng.choice([0.05, 0.95])), "hole": 0.02}[kind]
            gray = np.where(mask, value + rng.normal(0, 0.02, size=gray.shape), gray)
            masks[i] = mask
        tint = np.array([1.0, 0.95, 0.9], np.float32)
        images[i] = np.clip(gray[..., None] * tint * 255, 0, 255).astype(np.uint8)
    return images, labels, masks


MTD_NORMAL = "MT_Free"


def load_mtd(root, *, train_fraction: float = 0.8, random_state: int = 0) -> dict:
    """Magnetic Tile Defect dataset (``MT_*/Imgs/X.jpg`` with mask ``X.png``), seeded split.

    A seeded ``train_fraction`` of ``MT_Free`` is the training set; the rest of
    ``MT_Free`` and every defective image form the test set.

    Parameters
    ----------
    root : path
        Folder holding ``MT_Free``, ``MT_Blowhole``, ``MT_Break``, ... .
    train_fraction : float
        Share of the normal images used for training.
    random_state : int
        Seed of the split.

    Returns
    -------
    dict
        ``train_paths`` (list of str), ``test_paths`` (list of str), ``test_labels``
        (ndarray, +1 normal / -1 defective), ``test_masks`` (list of mask paths),
        ``test_categories`` (list of str). Nothing is decoded.
    """
    from pathlib import Path

    root = Path(root)
    classes = sorted(p.name for p in root.glob("MT_*") if (p / "Imgs").is_dir())
    if MTD_NORMAL not in classes:
        raise FileNotFoundError(f"{root} does not look like the MTD dataset: no {MTD_NORMAL}/Imgs folder")
    normal = sorted((root / MTD_NORMAL / "Imgs").glob("*.jpg"))
    order = np.random.default_rng(random_state).permutation(len(normal))
    n_train = int(round(train_fraction * len(normal)))
    train = [str(normal[i]) for i in sorted(order[:n_train])]
    test = [(normal[i], MTD_NORMAL) for i in sorted(order[n_train:])]
    for name in classes:
        if name != MTD_NORMAL:
            test += [(path, name) for path in sorted((root / name / "Imgs").glob("*.jpg"))]
    return {
        "train_paths": train,
        "test_paths": [str(path) for path, _ in test],
        "test_labels": np.array([1 if name == MTD_NORMAL else -1 for _, name in test]),
        "test_masks": [str(path.with_suffix(".png")) for path, _ in test],
        "test_categories": [name for _, name in test],
    }


# --------------------------------------------------------------------------- folder layouts
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (extension case-insensitive, hidden files and folders skipped), sorted.

    ``recursive``: also those of its subfolders, at any depth (sorted by path).
    """
    candidates = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder {folder} does not exist")
    return folder


def list_mvtec_categories(root: str | os.PathLike) -> list[str]:
    """Categories of a dataset in the MVTec AD layout: subfolders holding ``train/`` and ``test/``.

    Parameters
    ----------
    root : path
        Folder holding one subfolder per category (``bottle``, ``cable``, ...).

    Returns
    -------
    list of str
        Sorted category names.
    """
    root = _require_dir(Path(root), "MVTec-style dataset root")
    return [
        name
        for name in _subfolders(root)
        if (root / name / "train").is_dir() and (root / name / "test").is_dir()
    ]


def load_mvtec(
    root: str | os.PathLike,
    category: str,
    *,
    normal_dir: str = "good",
    require_masks: bool = True,
) -> dict:
    """One category of a dataset in the MVTec AD layout (MVTec AD, MPDD, BTAD, your own folders).

    Layout::

        <root>/<category>/train/good/*                      normal training images
        <root>/<category>/test/good/*                       normal test images
        <root>/<category>/test/<defect>/<name>.<ext>        defective test images
        <root>/<category>/ground_truth/<defect>/<name>_mask.<ext>   (or <name>.<ext>)

    Parameters
    ----------
    root : path
        Folder holding the category folders.
    category : str
        Category folder name.
    normal_dir : str, default="good"
        Name of the folder of normal images under ``train/`` and ``test/`` (``"ok"`` for
        BTAD as distributed).
    require_masks : bool, default=True
        True: a defective image without a mask raises ``FileNotFoundError``. False: its
        mask is None, and only image-level metrics are meaningful.

    Returns
    -------
    dict
        ``train_paths`` (list of str), ``test_paths`` (list of str), ``test_labels`` (ndarray
        of shape (n_test,), +1 normal / -1 defective), ``test_masks`` (list of mask paths,
        None for normal images), ``test_categories`` (list of str: the test subfolder,
        ``normal_dir`` for normal images). Normal test images come first, then each defect
        folder in alphabetical order. Nothing is decoded.
    """
    base = Path(root) / category
    if not base.is_dir():
        available = list_mvtec_categories(root) if Path(root).is_dir() else []
        raise FileNotFoundError(f"category folder {base} does not exist (categories found: {available})")
    train = image_files(_require_dir(base / "train" / normal_dir, f"training images of {category!r}"))
    test_root = _require_dir(base / "test", f"test images of {category!r}")
    return {
        "train_paths": [str(path) for path in train],
        **_labelled_test_set(test_root, base / "ground_truth", normal_dir, require_masks),
    }


def _labelled_test_set(
    test_root: Path, mask_root: Path, normal_dir: str, require_masks: bool, skip: tuple[str, ...] = ()
) -> dict:
    """``test_*`` of a folder holding ``normal_dir/`` and one folder per defect type.

    The mask of ``<test_root>/<defect>/<name>.<ext>`` is ``<mask_root>/<defect>/<name>_mask.<ext>``
    or ``<mask_root>/<defect>/<name>.<ext>`` (any image extension). Normal images come first,
    then each defect folder in alphabetical order; subfolders named in ``skip`` are left out.
    """
    defects = [name for name in _subfolders(test_root) if name != normal_dir and name not in skip]
    test_paths, test_masks, test_categories = [], [], []
    if (test_root / normal_dir).is_dir():
        for path in image_files(test_root / normal_dir):
            test_paths.append(str(path))
            test_masks.append(None)
            test_categories.append(normal_dir)
    for defect in defects:
        mask_dir = mask_root / defect
        masks = {p.stem: p for p in image_files(mask_dir)} if mask_dir.is_dir() else {}
        for path in image_files(test_root / defect):
            mask = masks.get(path.stem + "_mask", masks.get(path.stem))
            if mask is None and require_masks:
                raise FileNotFoundError(
                    f"no mask for {path}: expected {mask_dir / (path.stem + '_mask.png')} "
                    "(pass require_masks=False to load image labels only)"
                )
            test_paths.append(str(path))
            test_masks.append(None if mask is None else str(mask))
            test_categories.append(defect)
    return {
        "test_paths": test_paths,
        "test_labels": np.array([1 if name == normal_dir else -1 for name in test_categories], dtype=int),
        "test_masks": test_masks,
        "test_categories": test_categories,
    }


FOLDER_MASKS = "ground_truth"


def load_folder(
    root: str | os.PathLike,
    *,
    normal_dir: str = "good",
    mask_root: str | os.PathLike | None = None,
    require_masks: bool = False,
) -> dict:
    """A plain folder: images in it to train on, subfolders of normal and defective images to test on.

    Layout (both parts optional, at least one present)::

        <root>/*.<ext>                                  normal training images
        <root>/good/<name>.<ext>                        normal test images
        <root>/<defect>/<name>.<ext>                    defective test images, one folder per type
        <root>/ground_truth/<defect>/<name>_mask.<ext>  optional masks (or <name>.<ext>)

    This is an MVTec AD ``test/`` folder with its ``ground_truth/`` folder moved inside
    it: masks are found by the rule of :func:`load_mvtec`. ``ground_truth`` is therefore
    not a defect type; with ``mask_root`` elsewhere (e.g. pointing ``root`` at an MVTec
    category's ``test/`` and ``mask_root`` at its ``ground_truth/``) it is.

    Parameters
    ----------
    root : path
        The folder.
    normal_dir : str, default="good"
        Name of the subfolder of normal test images.
    mask_root : path, default=None
        Folder holding one mask folder per defect type; None: ``<root>/ground_truth``.
    require_masks : bool, default=False
        False: a defective image without a mask gets None (image metrics only, or pixel
        metrics skipped). True: it raises ``FileNotFoundError``.

    Returns
    -------
    dict
        ``train_paths`` (list of str: the image files directly in ``root``, sorted),
        ``test_paths`` (list of str), ``test_labels`` (ndarray of shape (n_test,), +1 for
        ``normal_dir`` / -1 for every other subfolder), ``test_masks`` (list of mask paths
        or None; None for every normal image), ``test_categories`` (list of str: the
        subfolder, ``normal_dir`` for normal images). Normal test images come first, then
        each defect folder in alphabetical order. Nothing is decoded.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder, or holds no image, neither directly nor in a subfolder.
    """
    root = _require_dir(Path(root), "image folder")
    inside = mask_root is None
    mask_root = root / FOLDER_MASKS if inside else Path(mask_root)
    skip = (FOLDER_MASKS,) if inside else ()
    split = {
        "train_paths": [str(path) for path in image_files(root)],
        **_labelled_test_set(root, mask_root, normal_dir, require_masks, skip),
    }
    if not split["train_paths"] and not split["test_paths"]:
        raise FileNotFoundError(
            f"no image files in {root}: expected images in it (to train on) or in {normal_dir}/ and "
            "defect subfolders (to test on)"
        )
    return split


VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def load_visa(
    root: str | os.PathLike, category: str, split_csv: str | os.PathLike = "split_csv/1cls.csv"
) -> dict:
    """One object of VisA, split by one of its CSV files.

    The CSV has the columns ``object,split,label,image,mask``; ``split`` is ``train`` or
    ``test``, ``label`` is ``normal`` or ``anomaly``, and ``image`` / ``mask`` are paths
    relative to ``root`` (``mask`` empty for normal images).

    Parameters
    ----------
    root : path
        The VisA folder (holding ``candle/``, ``pcb1/``, ..., ``split_csv/``).
    category : str
        Value of the ``object`` column, e.g. ``"candle"``.
    split_csv : path, default="split_csv/1cls.csv"
        The split file, relative to ``root`` (or absolute).

    Returns
    -------
    dict
        As :func:`load_mvtec`: ``train_paths`` (normal training rows only; anomalous
        training rows of few-shot splits are left out), ``test_paths``, ``test_labels``
        (ndarray, +1 normal / -1 anomaly), ``test_masks`` (mask path, None for normal
        images), ``test_categories`` (``"normal"`` or ``"anomaly"``), in the CSV's order.
    """
    root = Path(root)
    csv_path = root / split_csv
    if not csv_path.is_file():
        raise FileNotFoundError(f"VisA split file {csv_path} does not exist")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks the columns {missing}; expected {list(VISA_COLUMNS)}")
        rows = [{key: (row[key] or "").strip() for key in VISA_COLUMNS} for row in reader]
    selected = [row for row in rows if row["object"] == category]
    if not selected:
        objects = sorted({row["object"] for row in rows})
        raise ValueError(f"no rows for object {category!r} in {csv_path}; objects: {objects}")
    train_paths, test_paths, test_labels, test_masks, test_categories = [], [], [], [], []
    for row in selected:
        label, split = row["label"].lower(), row["split"].lower()
        if label not in ("normal", "anomaly") or split not in ("train", "test"):
            raise ValueError(
                f"{csv_path}: unexpected split/label {row['split']!r}/{row['label']!r} for {row['image']}"
            )
        if split == "train":
            if label == "normal":
                train_paths.append(str(root / row["image"]))
            continue
        test_paths.append(str(root / row["image"]))
        test_labels.append(1 if label == "normal" else -1)
        test_masks.append(str(root / row["mask"]) if label == "anomaly" and row["mask"] else None)
        test_categories.append(label)
    first = Path((train_paths or test_paths)[0])
    if not first.is_file():
        raise FileNotFoundError(f"{first} does not exist: image paths in {csv_path} are relative to {root}")
    return {
        "train_paths": train_paths,
        "test_paths": test_paths,
        "test_labels": np.array(test_labels, dtype=int),
        "test_masks": test_masks,
        "test_categories": test_categories,
    }


LAYOUTS = ("mvtec", "mtd", "visa", "folder")


def labelled_folder(folder: str | os.PathLike, mask_folder: str | os.PathLike | None = None) -> dict:
    """Defect images of one folder, with their masks, to train on as labelled anomalies.

    The mask of ``<folder>/<name>.<ext>`` is ``<mask_folder>/<name>_mask.<ext>`` or, in a
    separate ``mask_folder``, ``<mask_folder>/<name>.<ext>`` (any image extension); files named
    ``*_mask.*`` in ``folder`` are masks, not images. An image without a mask is labelled
    by its folder only.

    Returns
    -------
    dict
        ``paths`` (list of str) and ``masks`` (list of str or None), parallel.
    """
    folder = _require_dir(Path(folder), "labelled anomalies")
    mask_root = folder if mask_folder is None else _require_dir(Path(mask_folder), "their masks")
    candidates = {p.stem: p for p in image_files(mask_root)}
    paths = [p for p in image_files(folder) if not p.stem.endswith("_mask")]
    if not paths:
        raise FileNotFoundError(f"labelled anomalies: no image files in {folder}")
    masks = []
    for path in paths:
        mask = candidates.get(path.stem + "_mask")
        if mask is None and mask_folder is not None:
            mask = candidates.get(path.stem)
        masks.append(None if mask is None else str(mask))
    return {"paths": [str(p) for p in paths], "masks": masks}


def add_labelled_folder(split: dict, folder, mask_folder=None) -> dict:
    """``split`` with the defect images of ``folder`` (:func:`labelled_folder`) added to its
    training images, labelled -1 with their masks (``train_labels``, ``train_masks``)."""
    extra = labelled_folder(folder, mask_folder)
    n_train = len(split["train_paths"])
    labels = split.get("train_labels")
    labels = np.ones(n_train, int) if labels is None else np.asarray(labels)
    masks = split.get("train_masks") or [None] * n_train
    return {
        **split,
        "train_paths": [*split["train_paths"], *extra["paths"]],
        "train_labels": np.concatenate([labels, -np.ones(len(extra["paths"]), int)]),
        "train_masks": [*masks, *extra["masks"]],
    }


def labelled_share_of(settings: dict | None, split_seed: int) -> float:
    """The labelled share a model's split settings (``provenance_["split"]``) moved into
    training, so that an evaluation on the same layout leaves those images out again.

    Raises
    ------
    ValueError
        The model moved a share with another split seed than ``split_seed``.
    """
    settings = settings or {}
    share = float(settings.get("labelled_share", 0.0))
    if share and settings.get("split_seed", split_seed) != split_seed:
        raise ValueError(
            f"the model was fitted with --labelled-share {share} and --split-seed {settings['split_seed']}: "
            "evaluate with that --split-seed, so that its labelled images stay out"
        )
    return share


def move_labelled_share(split: dict, share: float, seed: int, never: Sequence[str] = ()) -> dict:
    """A seeded ``share`` of each defect type of the test images moved into training.

    The moved images join ``train_paths`` labelled -1 with their masks (``train_labels``,
    ``train_masks``); the test set keeps the others, so that nothing trained on is tested
    on. The same ``seed`` moves nested sets: the images a smaller share moves are among those a
    larger one moves. Defect types named in ``never`` stay in the test set (leave one type out).

    Returns
    -------
    dict
        ``split`` with ``train_labels``, ``train_masks`` and the ``test_*`` entries replaced,
        and ``n_labelled``: how many images moved.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the labelled share must be in [0, 1], got {share}")
    labels = np.asarray(split["test_labels"])
    categories = np.asarray(split.get("test_categories") or np.where(labels == 1, "good", "defect"))
    rng = np.random.default_rng(seed)
    moved = []
    for name in sorted(set(categories[labels == -1].tolist())):
        members = np.flatnonzero((categories == name) & (labels == -1))
        members = members[rng.permutation(len(members))]  # drawn for every type: nested shares
        if name not in never:
            moved += members[: int(round(share * len(members)))].tolist()
    moved = sorted(moved)
    kept = [i for i in range(len(labels)) if i not in set(moved)]
    masks = split.get("test_masks") or [None] * len(labels)
    n_train = len(split["train_paths"])
    out = dict(split)
    out["train_paths"] = list(split["train_paths"]) + [split["test_paths"][i] for i in moved]
    out["train_labels"] = np.array([1] * n_train + [-1] * len(moved), dtype=int)
    out["train_masks"] = [None] * n_train + [masks[i] for i in moved]
    for key in ("test_paths", "test_masks", "test_categories"):
        if split.get(key) is not None:
            out[key] = [split[key][i] for i in kept]
    out["test_labels"] = labels[kept]
    out["n_labelled"] = len(moved)
    return out


def load_layout(
    root: str | os.PathLike,
    layout: str,
    *,
    category: str | None = None,
    split_csv: str | os.PathLike = "split_csv/1cls.csv",
    split_seed: int = 0,
    labelled_share: float = 0.0,
) -> dict:
    """A data set in one of the :data:`LAYOUTS`, split into training and test images.

    Parameters
    ----------
    root : path
        The data set's folder.
    layout : {"mvtec", "mtd", "visa", "folder"}
        :func:`load_mvtec` (masks optional), :func:`load_mtd`, :func:`load_visa` or
        :func:`load_folder`.
    category : str, default=None
        The category (``"mvtec"``) or object (``"visa"``); required by those two.
    split_csv : path, default="split_csv/1cls.csv"
        ``"visa"``: the split file, relative to ``root``.
    split_seed : int, default=0
        ``"mtd"``: the seed of the split; with ``labelled_share``, also of the images moved.
    labelled_share : float in [0, 1], default=0.0
        A seeded share of each defect type moved from the test images into training,
        labelled -1 with their masks (:func:`move_labelled_share`; not for ``"visa"``,
        whose split file decides).

    Returns
    -------
    dict
        The loader's dict, plus ``"settings"``: what decides the split (the layout and the
        options above that it uses), as ``fit`` records it in ``provenance_["split"]``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    settings: dict = {"layout": layout}
    if layout in ("mvtec", "visa"):
        if not category:
            raise ValueError(f"layout {layout!r} needs a category")
        settings["category"] = category
    if layout == "mvtec":
        split = load_mvtec(root, category, require_masks=False)
    elif layout == "visa":
        settings["split_csv"] = os.fspath(split_csv)
        split = load_visa(root, category, split_csv)
    elif layout == "mtd":
        settings["split_seed"] = split_seed
        split = load_mtd(root, random_state=split_seed)
    else:
        split = load_folder(root)
    if labelled_share:
        if layout == "visa":
            raise ValueError("a labelled share needs a layout whose test split this package makes: not visa")
        settings["labelled_share"] = float(labelled_share)
        settings["split_seed"] = split_seed
        split = move_labelled_share(split, labelled_share, split_seed)
    return {**split, "settings": settings}


def one_class_classes(root: str | os.PathLike) -> list[str]:
    """Class names of an image-folder data set: the subfolders of ``<root>/train``, sorted."""
    return _subfolders(_require_dir(Path(root) / "train", "training images"))


def load_one_class(root: str | os.PathLike, normal_class: str) -> dict:
    """One-class split of a labelled image-folder data set (e.g. CIFAR-10 as image files).

    Layout: ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``. The training set is
    ``train/<normal_class>``; the test set is all of ``test/``, with ``normal_class``
    normal and every other class anomalous.

    Parameters
    ----------
    root : path
        Folder holding ``train/`` and ``test/``.
    normal_class : str
        The class taken as normal.

    Returns
    -------
    dict
        As :func:`load_mvtec`: ``train_paths``, ``test_paths`` (class by class,
        alphabetically), ``test_labels`` (ndarray, +1 for ``normal_class``, -1 otherwise),
        ``test_masks`` (all None), ``test_categories`` (class names).
    """
    root = Path(root)
    train_dir = _require_dir(root / "train" / normal_class, f"training images of class {normal_class!r}")
    test_root = _require_dir(root / "test", "test images")
    _require_dir(test_root / normal_class, f"test images of class {normal_class!r}")
    test = [(path, name) for name in _subfolders(test_root) for path in image_files(test_root / name)]
    return {
        "train_paths": [str(path) for path in image_files(train_dir)],
        "test_paths": [str(path) for path, _ in test],
        "test_labels": np.array([1 if name == normal_class else -1 for _, name in test], dtype=int),
        "test_masks": [None] * len(test),
        "test_categories": [name for _, name in test],
    }


def run_one_class_protocol(root: str | os.PathLike, make_detector, classes=None) -> dict:
    """The one-class protocol: each class in turn is normal, all test images are scored.

    For every class, a new detector from ``make_detector()`` is fitted on that class's
    training images and scores the whole test set; the image AUROC of telling that class
    from all others is recorded.

    Parameters
    ----------
    root : path
        Image-folder data set, as in :func:`load_one_class`.
    make_detector : callable
        Returns an unfitted detector with ``fit(paths)`` and ``score_samples(paths)``
        (scikit-learn's convention: higher = more normal), e.g.
        ``lambda: SimpleNetDetector(epochs=40)``.
    classes : sequence of str, default=None
        Classes to take as normal in turn; None: all of :func:`one_class_classes`.

    Returns
    -------
    dict
        ``per_class_auroc`` (dict of class name to float) and ``mean_auroc`` (float, their
        mean).
    """
    from .metrics import image_auroc

    classes = one_class_classes(root) if classes is None else list(classes)
    if not classes:
        raise ValueError(f"no classes to evaluate under {root}")
    per_class = {}
    for name in classes:
        data = load_one_class(root, name)
        detector = make_detector()
        detector.fit(data["train_paths"])
        scores = -np.asarray(detector.score_samples(data["test_paths"]), dtype=np.float64)
        per_class[name] = image_auroc(data["test_labels"], scores)
    return {"per_class_auroc": per_class, "mean_auroc": float(np.mean(list(per_class.values())))}
