"""MNIST from the four standard IDX files: found locally, or downloaded and verified.

Lookup order: the `root` argument, else $FASTRNN_DATA, else a per-user cache
directory ($XDG_CACHE_HOME/fastrnn/mnist, or ~/.cache/fastrnn/mnist). Each
file may be raw (`train-images-idx3-ubyte`) or gzipped (`...-ubyte.gz`).

A missing file is downloaded into that directory from the mirrors below, tried
in turn. It lands under its final name only after the SHA-256 of its
decompressed bytes matched the published MNIST files, so an interrupted or
tampered download never leaves anything that a later run would load.
"""

import gzip
import hashlib
import os
import zlib

import numpy as np

from ._files import write_atomically

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of each file's decompressed bytes (the published MNIST files).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

IMAGE_SIZE = 28
NUM_CLASSES = 10
_UBYTE = 0x08
DOWNLOAD_TIMEOUT = 60   # seconds per attempt


class DatasetError(ValueError):
    """MNIST files missing, corrupt, or not what they claim to be."""


def default_root():
    """Where load_mnist looks when given no root: $FASTRNN_DATA, else the user cache."""
    env = os.environ.get("FASTRNN_DATA")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fastrnn", "mnist")


# -- the IDX format ----------------------------------------------------------------
#   bytes 0-1: zero; byte 2: element type (0x08 = unsigned byte); byte 3: ndim;
#   then ndim big-endian uint32 dimensions; then the elements, row-major.


def parse_idx(data, ndim, what):
    """The array in IDX bytes `data`, checking magic, dimensions and exact length."""
    if len(data) < 4:
        raise DatasetError(f"{what}: too short for an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise DatasetError(f"{what}: not an unsigned-byte IDX file "
                           f"(magic {data[:4].hex()}, expected 000008{ndim:02x})")
    if data[3] != ndim:
        raise DatasetError(f"{what}: IDX file has {data[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{what}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "has trailing bytes"
        raise DatasetError(f"{what}: {state}: {len(data)} bytes, its header {dims} "
                           f"implies {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_file(path):
    """The decompressed bytes of `path` (gzip recognised by its magic, not its name)."""
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    return data


def _find(root, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    return None


def _load_pair(images_path, labels_path):
    images = parse_idx(_read_file(images_path), 3, images_path)
    labels = parse_idx(_read_file(labels_path), 1, labels_path)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                           f"MNIST's are {IMAGE_SIZE}x{IMAGE_SIZE}")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{images_path} holds {images.shape[0]} images but {labels_path} "
                           f"holds {labels.shape[0]} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DatasetError(f"{labels_path}: label {labels.max()} outside 0..{NUM_CLASSES - 1}")
    return images.astype(np.float32) / np.float32(255.0), labels.astype(np.int64)


# -- downloading ---------------------------------------------------------------------


def fetch(url, timeout=DOWNLOAD_TIMEOUT):
    """The bytes at `url` (tests replace this function; nothing else touches the network)."""
    import urllib.request   # here, not at import: it costs `import fastrnn` 30-50 ms
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _download(name, root):
    """Fetch `name` from the mirrors into root, verified, renamed into place; its path."""
    failures = []
    for mirror in MIRRORS:
        url = mirror + name + ".gz"
        try:
            payload = fetch(url)
            compressed = payload[:2] == b"\x1f\x8b"
            data = gzip.decompress(payload) if compressed else payload
        except Exception as exc:  # network and decoding errors alike: try the next mirror
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name]:
            failures.append(f"{url}: SHA-256 {digest} does not match the MNIST file")
            continue
        target = os.path.join(root, name + (".gz" if compressed else ""))
        write_atomically(target, lambda file: file.write(payload))
        return target
    raise DatasetError(
        f"could not download {name} into {root}:\n  " + "\n  ".join(failures) +
        "\nIf this machine is offline, copy the four MNIST IDX files (raw or .gz) into a "
        "directory and point FASTRNN_DATA at it (export FASTRNN_DATA=/path/to/mnist), "
        "or pass root= / --data DIR.")


def load_mnist(root=None, *, download=True):
    """(x_train, y_train, x_test, y_test): x float32 (N, 28, 28) in [0, 1], y int64 (N,)."""
    root = os.fspath(root) if root is not None else default_root()
    paths = {key: _find(root, name) for key, name in FILES.items()}
    missing = [FILES[key] for key, path in paths.items() if path is None]
    if missing:
        if not download:
            raise DatasetError(
                f"MNIST files not found in {root}: {', '.join(missing)} (raw or .gz). "
                f"Point FASTRNN_DATA (or --data) at a directory that holds them, "
                f"or allow download=True.")
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot create the MNIST directory {root}: {exc}") from None
        for key, name in FILES.items():
            if paths[key] is None:
                paths[key] = _download(name, root)
    x_train, y_train = _load_pair(paths["train_images"], paths["train_labels"])
    x_test, y_test = _load_pair(paths["test_images"], paths["test_labels"])
    return x_train, y_train, x_test, y_test
