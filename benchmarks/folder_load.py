"""Load time and peak memory of an image folder (``dataset=cifar10_jpeg``): cold (decoding) and warm (the cache).

Each load runs in a fresh process (``--child``) through ``spenser_jax.data.load``
as a run loads it, with an empty cache folder of its own for the cold load
and the same folder, then filled, for the warm ones: wall seconds and the
process's peak resident memory (``ru_maxrss``), beside the size of the
arrays. The files are read once before the cold load, so every cold load
reads them from the page cache (dropping it would touch the whole host).
Then, on ``--decode-sample`` images, decoding one by one against 2 worker
processes and 2 threads: whether parallel decoding pays on this machine.

    python benchmarks/folder_load.py              # all 60,000 images of ../shared/data/cifar10_jpeg (~1 min)
    python benchmarks/folder_load.py --quick      # a made-up folder of 400 small PNGs, a smoke test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import common
import numpy as np


def child(args) -> dict:
    from spenser_jax import data

    start = time.perf_counter()
    if args.folder:
        ds = data.load_folder(args.folder, cache_dir=args.cache)
    else:
        ds = data.load("cifar10_jpeg", cache_dir=args.cache)
    seconds = time.perf_counter() - start
    arrays = sum(a.nbytes for a in ds if isinstance(a, np.ndarray))
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "arrays_mib": round(arrays / 2**20, 1),
        "train": list(ds.train_images.shape),
        "test": list(ds.test_images.shape),
    }


def run_child(args, cache: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", "--cache", str(cache)] + (
        ["--folder", args.folder] if args.folder else []
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _decode_chunk(paths: list[Path]) -> int:
    from spenser_jax.data import folder

    return sum(folder._decode(p, None)[0].size for p in paths)


def decode_comparison(paths: list[Path]) -> dict:
    """Seconds to decode ``paths`` one by one, with 2 processes and with 2 threads (chunks of 250)."""
    chunks = [paths[i : i + 250] for i in range(0, len(paths), 250)]
    out = {"images": len(paths)}
    start = time.perf_counter()
    for chunk in chunks:
        _decode_chunk(chunk)
    out["one_by_one_s"] = round(time.perf_counter() - start, 3)
    for kind, pool in (("processes_2_s", ProcessPoolExecutor), ("threads_2_s", ThreadPoolExecutor)):
        with pool(2) as ex:
            start = time.perf_counter()
            list(ex.map(_decode_chunk, chunks))
            out[kind] = round(time.perf_counter() - start, 3)
    return out


def made_up_folder(root: Path, per_class: int = 20) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 4)):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / f"class{c}" / f"{i}.png"
                )
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help="an image folder instead of cifar10_jpeg")
    parser.add_argument("--warm-repeats", type=int, default=3)
    parser.add_argument("--decode-sample", type=int, default=5000, help="images in the parallel-decoding comparison")
    parser.add_argument("--quick", action="store_true", help="a made-up folder of 400 PNGs")
    parser.add_argument("--name", default="folder_load")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    load_before = common.load_average()
    with tempfile.TemporaryDirectory(prefix="folder_load_") as tmp:
        tmp = Path(tmp)
        if args.quick:
            args.folder, args.decode_sample = str(made_up_folder(tmp / "images")), 200
        from spenser_jax.data import folder

        root = Path(args.folder) if args.folder else folder.scan(_cifar_root()).root
        start = time.perf_counter()
        listing = folder.scan(root)
        scan_s = time.perf_counter() - start
        for rel in listing.files:  # into the page cache: every cold load below reads from memory
            (root / rel).read_bytes()
        cold = run_child(args, tmp / "cache")
        warm = [run_child(args, tmp / "cache") for _ in range(args.warm_repeats)]
        step = max(1, len(listing.files) // args.decode_sample)
        decoding = decode_comparison([root / rel for rel in listing.files[::step][: args.decode_sample]])
        cache_mib = sum(f.stat().st_size for f in (tmp / "cache").rglob("*.npz")) / 2**20
    payload = common.header(args.name, load_before)
    payload.update(
        {
            "settings": {
                "folder": str(root),
                "data_set": "made-up PNGs" if args.quick else "cifar10_jpeg (CIFAR-10, JPEG copy)",
                "images": len(listing.files),
                "page_cache": "warm (files read once before the cold load)",
                "verify": "SHA-256 listing checked on the cold load" if not args.folder else "none",
            },
            "scan_s": round(scan_s, 3),
            "cold": cold,
            "warm": warm,
            "warm_median_s": sorted(w["seconds"] for w in warm)[len(warm) // 2],
            "cache_file_mib": round(cache_mib, 1),
            "decode_comparison": decoding,
        }
    )
    print(json.dumps(payload, indent=1))
    print(f"wrote {common.write_result(args.name, payload, args.out)}")


def _cifar_root() -> Path:
    from spenser_jax.data import _locate_folder

    return _locate_folder("cifar10_jpeg", None)


if __name__ == "__main__":
    main()
