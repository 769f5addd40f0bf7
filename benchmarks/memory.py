"""Peak memory of ``fit`` on 200 images at 224 × 224, each configuration in its own process.

Configurations (one epoch and a small ``patch_fraction``: the feature cache, not training,
sets the peak):

- ``wide_resnet50_2`` (random weights), cache in memory, and with ``cache_dir`` (a
  memory-mapped file on disk);
- ``efficientnet_lite0``, cache in memory;
- the feature extraction alone for wide_resnet50_2, written into the preallocated cache as
  ``fit`` does, and collected in a list then concatenated, as ``fit`` used to: the second
  needs the cache twice at the moment of concatenation.

Each child process reports its peak resident set size (``ru_maxrss``), the peaks of its
anonymous memory and of its file-backed memory (sampled every 20 ms from
``/proc/self/status``; a memory-mapped cache is file-backed, and the kernel can write it
back and drop it whenever memory is short), and its resident size before fitting.

Usage::

    python benchmarks/memory.py --threads 1
    python benchmarks/memory.py --quick            # 40 images
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from timing import add_common_arguments, table

WRN50 = dict(backbone="wide_resnet50_2", weights=None)
CONFIGS = {
    "wrn50, in memory": WRN50,
    "wrn50, cache_dir": dict(**WRN50, cache_dir="DISK"),
    "effnet-lite0, in memory": dict(backbone="efficientnet_lite0"),
    "wrn50 extraction, preallocated": dict(**WRN50, extraction="preallocated"),
    "wrn50 extraction, list + cat": dict(**WRN50, extraction="concatenate"),
}
FIT = dict(resize=224, crop_size=224, epochs=1, patch_fraction=0.01, device="cpu", random_state=0)
MIB = 2**20


def status() -> dict[str, int]:
    """Resident memory from /proc/self/status, in bytes (Linux)."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as file:
        for line in file:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class Sampler(threading.Thread):
    """Records the peaks of anonymous and file-backed resident memory while it runs."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_anon = 0
        self.peak_file = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            values = status()
            self.peak_anon = max(self.peak_anon, values["RssAnon"])
            self.peak_file = max(self.peak_file, values["RssFile"] + values["RssShmem"])
            time.sleep(self.interval)


def child(name: str, n_images: int, threads: int | None) -> None:
    import torch

    from sksimplenet import SimpleNetDetector
    from sksimplenet.backbones import build_feature_extractor
    from sksimplenet.cache import FeatureCache
    from sksimplenet.datasets import make_synthetic
    from sksimplenet.model import make_model

    if threads is not None:
        torch.set_num_threads(threads)
    config = dict(CONFIGS[name])
    extraction = config.pop("extraction", None)
    images, _, _ = make_synthetic(n_images, 0, texture="object", size=224, random_state=0)
    before = status()["VmRSS"]
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as folder:
        if config.get("cache_dir") == "DISK":
            config["cache_dir"] = folder
        if extraction is None:
            detector = SimpleNetDetector(**config, **FIT)
            detector.fit(images)
            shape = (n_images, *detector.feature_shape_)
        else:
            extractor = build_feature_extractor(config["backbone"], None, config["weights"])
            model = make_model(extractor, 1, SimpleNetDetector().get_params())
            batch_images = torch.from_numpy(images).permute(0, 3, 1, 2)
            chunks, store = [], FeatureCache(n_images, torch.float16, torch.device("cpu"))
            with torch.inference_mode():
                for first in range(0, n_images, 16):
                    batch = batch_images[first : first + 16].float() / 255.0
                    features = model.patch_features(batch).permute(0, 2, 3, 1)
                    if extraction == "preallocated":
                        store.write(first, features)
                    else:
                        chunks.append(features.to(torch.float16))
                cache = store.tensor if extraction == "preallocated" else torch.cat(chunks)
            shape = tuple(cache.shape)
    seconds = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    print(
        json.dumps(
            {
                "name": name,
                "before": before,
                "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "peak_anon": sampler.peak_anon,
                "peak_file": sampler.peak_file,
                "cache": 2 * int(torch.tensor(shape).prod()),
                "seconds": seconds,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--images", type=int, default=None, help="default: 200 (40 with --quick)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_images = args.images or (40 if args.quick else 200)
    if args.child is not None:
        child(args.child, n_images, args.threads)
        return
    rows = []
    for name in CONFIGS:
        command = [sys.executable, __file__, "--child", name, "--images", str(n_images)]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ).stdout
        result = json.loads(output.strip().splitlines()[-1])
        rows.append(
            (
                name,
                f"{result['cache'] / MIB:.0f}",
                f"{result['before'] / MIB:.0f}",
                f"{result['peak'] / MIB:.0f}",
                f"{result['peak_anon'] / MIB:.0f}",
                f"{result['peak_file'] / MIB:.0f}",
                f"{(result['peak'] - result['before']) / MIB:.0f}",
                f"{result['seconds']:.0f}",
            )
        )
        print(f"done: {name}", file=sys.stderr)
    print(f"{n_images} images at 224 x 224; float16 feature cache; memory in MiB")
    header = (
        "configuration",
        "cache",
        "RSS before",
        "peak RSS",
        "peak anon",
        "peak file",
        "peak - before",
        "s",
    )
    print(table(rows, header))


if __name__ == "__main__":
    main()
