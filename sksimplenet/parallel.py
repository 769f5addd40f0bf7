"""Fit one detector per data set (one per product or category) in parallel through joblib.

The fits are :func:`joblib.Parallel` tasks, so the backend decides where they run:
processes on this machine by default (``loky``), or the workers of a Dask cluster with
``with joblib.parallel_config(backend="dask"): fit_many(...)`` once a
``dask.distributed.Client`` is connected. Each task fits one detector on one device; give
every task its own device (``device=f"cuda:{i}"``) through ``make_detector``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import joblib
from sklearn.base import BaseEstimator, clone


def _fit_one(make_detector, name, X):
    detector = clone(make_detector) if isinstance(make_detector, BaseEstimator) else make_detector(name)
    return name, detector.fit(X)


def fit_many(
    make_detector: Callable[[Hashable], BaseEstimator] | BaseEstimator,
    datasets: Mapping[Hashable, object],
    n_jobs: int | None = None,
) -> dict:
    """Fit one detector per data set, in parallel.

    Parameters
    ----------
    make_detector : callable or estimator
        ``make_detector(name)`` returns the unfitted detector for the data set ``name``
        (so that each can get its own parameters, e.g. its own ``device``), or one
        estimator that is cloned for every data set. With process or cluster backends it
        must be picklable (module-level functions, lambdas and partials are).
    datasets : mapping of name to images
        The training images of each data set, in any form the detector's ``fit`` accepts.
    n_jobs : int, default=None
        Parallel tasks, as in :class:`joblib.Parallel`: None means 1 unless a
        :func:`joblib.parallel_config` context says otherwise (with the Dask backend, the
        cluster's workers run the tasks); -1 uses all cores.

    Returns
    -------
    dict
        ``{name: fitted detector}``, in the order of ``datasets``.

    Raises
    ------
    TypeError
        ``make_detector`` is neither callable nor an estimator, or ``datasets`` is not a
        mapping.
    """
    if not (isinstance(make_detector, BaseEstimator) or callable(make_detector)):
        raise TypeError(
            "make_detector must be a callable name -> detector or an estimator, "
            f"got {type(make_detector).__name__}"
        )
    if not isinstance(datasets, Mapping):
        raise TypeError(f"datasets must be a mapping name -> images, got {type(datasets).__name__}")
    if not datasets:
        return {}
    results = joblib.Parallel(n_jobs=n_jobs)(
        joblib.delayed(_fit_one)(make_detector, name, X) for name, X in datasets.items()
    )
    fitted = dict(results)
    return {name: fitted[name] for name in datasets}
