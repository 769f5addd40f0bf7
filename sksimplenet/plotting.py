"""Anomaly maps drawn over their images: one overlay, a grid for a batch, PNG files.

Matplotlib is an optional dependency: ``pip install sksimplenet[plot]``. It is imported
only when a function here is called.

Resolution rule: the **image is brought to the map's resolution**, never the other way,
so the scores are drawn exactly as computed. An image whose size differs from its map's
is decoded with :func:`sksimplenet.image_io.load_image`, then passed through
:func:`sksimplenet.image_io.preprocess` with the ``resize`` and ``crop_size`` given
(normally the detector's own, for maps from ``detector.anomaly_map(X)``); when they are
not given it is resized to the map's ``(height, width)``, which lines up with maps of a
detector that does not crop (``crop_size=None`` with ``resize=(height, width)``, or any
detector's ``anomaly_map(X, original_size=True)``).

Colours: the map is drawn with the ``"jet"`` colour map between ``vmin`` and ``vmax``
(by default the map's own minimum and maximum; :func:`plot_grid` uses one range for the
whole batch so that panels compare), and the predicted region ``map >= threshold`` is
outlined in white. :func:`centred_range` gives a range for a set of maps with the decision
threshold at its middle, so that one colour means one score in every image and the
colour scale's midpoint (green-yellow in ``"jet"``) is the threshold.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["centred_range", "overlay", "plain_image", "plot_grid", "save_overlay"]

CONTOUR_COLOR = "white"
_PANEL_INCHES = 2.5
_GRID_DPI = 100
#: Height in pixels of the band :func:`save_overlay` adds below the image for a caption and
#: a colour bar, and the smallest width of such a figure (room for the tick labels).
FOOTER_PIXELS = 58
FOOTER_MIN_WIDTH = 320


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("sksimplenet.plotting needs matplotlib: pip install sksimplenet[plot]") from None
    return matplotlib


def _agg_figure(width_inches: float, height_inches: float, dpi: float):
    """A figure drawn by the Agg canvas (no display, no pyplot state)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_inches, height_inches), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _as_map(anomaly_map) -> np.ndarray:
    if hasattr(anomaly_map, "detach"):
        anomaly_map = anomaly_map.detach().cpu().numpy()
    values = np.asarray(anomaly_map, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"anomaly_map must be a non-empty 2-D (height, width) array, got {values.shape}")
    # NaN marks pixels the network never saw (a centre crop cut them away): drawn without
    # a heatmap and left out of the colour scale.
    if np.isinf(values).any():
        raise ValueError("anomaly_map contains infinite values")
    if np.isnan(values).all():
        raise ValueError("anomaly_map is NaN everywhere: no pixel was seen")
    return values


def centred_range(low: float, high: float, centre: float) -> tuple[float, float]:
    """The colour range ``(centre - d, centre + d)``, the narrowest that holds ``[low, high]``.

    With ``centre`` the decision threshold and ``low``, ``high`` the smallest and largest
    values of a set of anomaly maps, every map of the set is drawn on one scale whose
    midpoint is the threshold: colours compare across images, and colours above the middle
    of the colour map are pixels above the threshold.

    Parameters
    ----------
    low, high : float
        Smallest and largest map value to cover (NaN-free).
    centre : float
        The value at the middle of the range.

    Returns
    -------
    vmin, vmax : float
        ``vmax - centre == centre - vmin > 0``.
    """
    low, high, centre = float(low), float(high), float(centre)
    if not all(np.isfinite([low, high, centre])):
        raise ValueError(f"low, high and centre must be finite, got {low!r}, {high!r}, {centre!r}")
    half = max(high - centre, centre - low)
    if half <= 0:  # every value is the centre itself
        half = max(abs(centre) * 1e-6, 1e-12)
    return centre - half, centre + half


def plain_image(image, shape: tuple[int, int], resize=None, crop_size=None) -> np.ndarray:
    """The image on its anomaly map's pixel grid: ``(height, width, 3)`` floats in [0, 1].

    Parameters
    ----------
    image : str, path, ndarray, PIL image or tensor
        One image in any form :mod:`sksimplenet.image_io` accepts.
    shape : (height, width)
        The map's size.
    resize, crop_size
        As in :func:`overlay` (see the module's resolution rule).
    """
    from .image_io import as_image_list, image_size, load_image, preprocess

    item = as_image_list([image])[0]
    tensor = load_image(item)
    if image_size(item) != tuple(shape):
        if resize is None and crop_size is None:
            tensor = preprocess(tensor, tuple(shape), None)
        else:
            tensor = preprocess(tensor, resize, crop_size)
        if tuple(tensor.shape[-2:]) != tuple(shape):
            raise ValueError(
                f"the image is {tuple(tensor.shape[-2:])} after resize={resize!r}, crop_size={crop_size!r} "
                f"but its anomaly map is {tuple(shape)}"
            )
    return tensor.clamp(0, 1).permute(1, 2, 0).numpy()


def _draw(ax, image: np.ndarray, anomaly_map: np.ndarray, threshold, alpha: float, vmin, vmax):
    height, width = anomaly_map.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    ax.imshow(image, extent=extent, interpolation="nearest")
    seen = np.ma.masked_invalid(anomaly_map)
    seen_low, seen_high = float(seen.min()), float(seen.max())
    low = seen_low if vmin is None else float(vmin)
    high = seen_high if vmax is None else float(vmax)
    if high <= low:
        high = low + 1e-12
    artist = ax.imshow(
        seen,
        cmap="jet",
        alpha=alpha,
        vmin=low,
        vmax=high,
        extent=extent,
        interpolation="nearest",
    )
    if threshold is not None and seen_low < threshold <= seen_high:
        ax.contour(
            np.arange(width),
            np.arange(height),
            seen,
            levels=[float(threshold)],
            colors=CONTOUR_COLOR,
            linewidths=1.5,
        )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    return artist


def overlay(
    image,
    anomaly_map,
    ax=None,
    threshold: float | None = None,
    alpha: float = 0.5,
    *,
    resize=None,
    crop_size=None,
    vmin: float | None = None,
    vmax: float | None = None,
):
    """Draw an anomaly map as a heatmap over its image, and outline the predicted region.

    Parameters
    ----------
    image : str, path, ndarray, PIL image or tensor
        One image in any form :mod:`sksimplenet.image_io` accepts (``uint8`` ``(height,
        width, channels)`` or ``(height, width)`` arrays, image files, ...).
    anomaly_map : array-like of shape (height, width)
        Higher = more anomalous, e.g. one item of ``detector.anomaly_map(X)``.
    ax : matplotlib Axes, default=None
        Where to draw; None creates a new figure with :mod:`matplotlib.pyplot`.
    threshold : float, default=None
        When given, the boundary of ``anomaly_map >= threshold`` is drawn in white. For
        the region that makes ``detector.predict`` answer -1, use ``-detector.offset_``.
    alpha : float, default=0.5
        Opacity of the heatmap.
    resize, crop_size : int, (int, int) or None, default=None
        Used to bring an image of another size onto the map's grid, as the detector
        preprocesses it (see the module docstring); None resizes it to the map's size.
    vmin, vmax : float, default=None
        Map values at the ends of the colour scale; None: the map's minimum and maximum.

    Returns
    -------
    matplotlib Axes
        The axes drawn on.
    """
    _matplotlib()
    values = _as_map(anomaly_map)
    pixels = plain_image(image, values.shape, resize, crop_size)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    _draw(ax, pixels, values, threshold, alpha, vmin, vmax)
    return ax


def save_overlay(
    path: str | os.PathLike,
    image,
    anomaly_map,
    threshold: float | None = None,
    *,
    alpha: float = 0.5,
    resize=None,
    crop_size=None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = False,
    caption: str | None = None,
) -> None:
    """Write :func:`overlay` to a PNG file with one image pixel per map pixel.

    Without ``colorbar`` and ``caption`` the PNG is exactly the map's size, ``(height,
    width)``, with no axes or margins. With either, a band of :data:`FOOTER_PIXELS` (58)
    pixels is added below the image for the caption and a horizontal colour bar (ticks at
    ``vmin``, ``vmax`` and the threshold, which is also marked by a black line), and the
    PNG is at least :data:`FOOTER_MIN_WIDTH` (320) pixels wide; the image keeps one pixel
    per map pixel in the top-left ``(height, width)`` corner, the rest is white.

    Parameters
    ----------
    path : str or path
        Destination file (PNG). Its folder must exist.
    image, anomaly_map, threshold, alpha, resize, crop_size, vmin, vmax
        As in :func:`overlay`.
    colorbar : bool, default=False
        Draw the colour bar of the heatmap below the image.
    caption : str, default=None
        One line of text below the image, e.g. the image's score.
    """
    values = _as_map(anomaly_map)
    pixels = plain_image(image, values.shape, resize, crop_size)
    height, width = values.shape
    dpi = 100
    footer = FOOTER_PIXELS if colorbar or caption is not None else 0
    figure_width = max(width, FOOTER_MIN_WIDTH) if footer else width
    figure_height = height + footer
    figure = _agg_figure(figure_width / dpi, figure_height / dpi, dpi)

    def box(left, bottom, box_width, box_height):  # pixels -> figure fractions
        return (
            left / figure_width,
            bottom / figure_height,
            box_width / figure_width,
            box_height / figure_height,
        )

    ax = figure.add_axes(box(0, footer, width, height))
    artist = _draw(ax, pixels, values, threshold, alpha, vmin, vmax)
    if caption is not None:
        figure.text(4 / figure_width, (footer - 4) / figure_height, caption, ha="left", va="top", fontsize=8)
    if colorbar:
        low, high = artist.norm.vmin, artist.norm.vmax
        from matplotlib.cm import ScalarMappable

        cax = figure.add_axes(box(16, 22, figure_width - 32, 10))
        # Drawn from the heatmap's colour map and range, opaque (the heatmap is translucent).
        scale = ScalarMappable(norm=artist.norm, cmap=artist.cmap)
        bar = figure.colorbar(scale, cax=cax, orientation="horizontal")
        ticks = [low, high]
        if threshold is not None and low <= threshold <= high:
            ticks.insert(1, float(threshold))
            cax.axvline(float(threshold), color="black", linewidth=1.5)
        bar.set_ticks(ticks, labels=[f"{tick:.3g}" for tick in ticks])
        cax.tick_params(labelsize=7, length=2, pad=1)
        bar.outline.set_linewidth(0.5)
    figure.savefig(os.fspath(path), dpi=dpi, format="png")


def _label_text(label) -> str:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and label in (1, -1):
        return "normal" if label == 1 else "anomalous"
    return str(label)


def plot_grid(
    images,
    maps,
    scores=None,
    labels=None,
    threshold: float | None = None,
    ncols: int = 4,
    path: str | os.PathLike | None = None,
    *,
    alpha: float = 0.5,
    resize=None,
    crop_size=None,
    vmin: float | None = None,
    vmax: float | None = None,
):
    """A grid of overlays for a batch, one panel per image, optionally saved as PNG.

    Every panel uses one colour range, by default the minimum and maximum over all maps,
    so that colours compare across panels. Each panel is 2.5 inches square at 100 dpi: a saved
    grid is ``250 * ncols`` pixels wide and ``250 * ceil(n_images / ncols)`` tall (with
    fewer columns when there are fewer images than ``ncols``).

    Parameters
    ----------
    images : sequence of images or array of shape (n_images, height, width[, channels])
        Anything :mod:`sksimplenet.image_io` accepts.
    maps : array-like of shape (n_images, height, width) or sequence of 2-D arrays
        Anomaly maps, e.g. ``detector.anomaly_map(images)``.
    scores : array-like of shape (n_images,), default=None
        Shown in each panel's title (e.g. ``-detector.score_samples(images)``).
    labels : array-like of shape (n_images,), default=None
        Shown in each panel's title; +1 / -1 read as "normal" / "anomalous" and
        anomalous titles are red.
    threshold : float, default=None
        Outline ``map >= threshold`` in every panel, as in :func:`overlay`.
    ncols : int, default=4
        Panels per row.
    path : str or path, default=None
        When given, the figure is written there as PNG.
    alpha, resize, crop_size
        As in :func:`overlay`.
    vmin, vmax : float, default=None
        The colour range of every panel (e.g. from :func:`centred_range`); None: the
        minimum and maximum over all maps.

    Returns
    -------
    matplotlib Figure
        Drawn by the Agg canvas; show it in a notebook by evaluating it, or save it.
    """
    from .image_io import as_image_list

    image_list = as_image_list(images)
    map_list = [_as_map(m) for m in maps]
    n = len(image_list)
    if len(map_list) != n:
        raise ValueError(f"{n} images but {len(map_list)} maps")
    for name, values in (("scores", scores), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{n} images but {len(values)} {name}")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(int(ncols), n)
    nrows = -(-n // ncols)
    low = min(float(np.nanmin(m)) for m in map_list) if vmin is None else float(vmin)
    high = max(float(np.nanmax(m)) for m in map_list) if vmax is None else float(vmax)

    figure = _agg_figure(_PANEL_INCHES * ncols, _PANEL_INCHES * nrows, _GRID_DPI)
    axes = np.atleast_1d(figure.subplots(nrows, ncols, squeeze=False)).ravel()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.12 / nrows, wspace=0.05, hspace=0.15)
    for index, ax in enumerate(axes):
        if index >= n:
            ax.set_axis_off()
            continue
        values = map_list[index]
        pixels = plain_image(image_list[index], values.shape, resize, crop_size)
        _draw(ax, pixels, values, threshold, alpha, low, high)
        parts = []
        if scores is not None:
            parts.append(f"score {float(scores[index]):.3g}")
        color = "black"
        if labels is not None:
            parts.append(_label_text(labels[index]))
            if _label_text(labels[index]) == "anomalous":
                color = "red"
        if parts:
            ax.set_title(", ".join(parts), fontsize=9, color=color)
    if path is not None:
        figure.savefig(os.fspath(path), dpi=_GRID_DPI, format="png")
    return figure
