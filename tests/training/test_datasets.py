"""load_mnist: the real files, a strict IDX reader, lookup order, verified downloads."""

import gzip
import os
import urllib.error

import numpy as np
import pytest

from fastrnn import datasets
from fastrnn.datasets import DatasetError, load_mnist
from helpers import REAL, have_real, idx_bytes, write_mnist

@have_real
def test_real_mnist():
    x_train, y_train, x_test, y_test = load_mnist(REAL, download=False)
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 == x_train.min() and x_train.max() == 1.0
    assert list(y_train[:5]) == [5, 0, 4, 1, 9] and list(y_test[:5]) == [7, 2, 1, 0, 4]
    assert np.array_equal(np.bincount(y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                974, 1009])


@have_real
def test_embedded_checksums_are_the_published_ones():
    with open(os.path.join(REAL, "SHA256SUMS.uncompressed")) as file:
        published = dict(reversed(line.split()) for line in file if line.strip())
    assert datasets.SHA256 == published


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_small_files_round_trip(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    x_train, y_train, x_test, y_test = load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(x_train * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert x_test.dtype == np.float32 and y_train.dtype == np.int64


def corrupt(path, how):
    with open(path, "rb") as file:
        data = gzip.decompress(file.read())
    if how == "truncated":
        data = data[:-1]
    elif how == "trailing":
        data = data + b"\0"
    elif how == "magic":
        data = b"\x00\x00\x0d" + data[3:]
    elif how == "ndim":
        data = data[:3] + b"\x02" + data[4:]
    elif how == "header":
        data = data[:6]
    with open(path, "wb") as file:
        file.write(gzip.compress(data))


@pytest.mark.parametrize("how", ["truncated", "trailing", "magic", "ndim", "header"])
@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_corrupt_idx_is_a_clear_error_naming_the_file(tmp_path, name, how):
    write_mnist(tmp_path)
    corrupt(tmp_path / (name + ".gz"), how)
    with pytest.raises(DatasetError, match=name):
        load_mnist(tmp_path, download=False)


def test_truncated_gzip_and_other_mismatches(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(DatasetError, match="train-labels.*gzip"):
        load_mnist(tmp_path, download=False)

    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4))))
    with pytest.raises(DatasetError, match="5 images but .*t10k-labels.* 4 labels"):
        load_mnist(tmp_path, download=False)

    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes([1, 2, 3, 4, 10])))
    with pytest.raises(DatasetError, match="label 10"):
        load_mnist(tmp_path, download=False)

    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((5, 28, 27)))))
    with pytest.raises(DatasetError, match="28x27"):
        load_mnist(tmp_path, download=False)


def test_lookup_order(tmp_path, monkeypatch):
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"
    expected = {d: write_mnist(d, n_test=n)["t10k-labels-idx1-ubyte"]
                for d, n in ((explicit, 3), (env, 4), (cache / "fastrnn" / "mnist", 6))}
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("FASTRNN_DATA", str(env))
    assert len(load_mnist(explicit, download=False)[3]) == 3
    assert len(load_mnist(download=False)[3]) == 4
    monkeypatch.delenv("FASTRNN_DATA")
    np.testing.assert_array_equal(load_mnist(download=False)[3],
                                  expected[cache / "fastrnn" / "mnist"])
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_root() == str(tmp_path / "home" / ".cache" / "fastrnn" / "mnist")


def test_missing_without_download_says_how_to_point_at_files(tmp_path):
    with pytest.raises(DatasetError, match="FASTRNN_DATA"):
        load_mnist(tmp_path, download=False)


# -- downloads, with a fake network ----------------------------------------------------


def fake_network(monkeypatch, responses):
    """Replace fetch: responses maps a mirror to a function name -> bytes (or raises)."""
    calls = []

    def fetch(url, timeout=None):
        calls.append(url)
        mirror = next(m for m in datasets.MIRRORS if url.startswith(m))
        return responses[mirror](url[len(mirror):-len(".gz")])
    monkeypatch.setattr(datasets, "fetch", fetch)
    return calls


def offline(name):
    raise urllib.error.URLError("network unreachable")


def poisoned(name):
    return gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12)


def real_files(name):
    with open(os.path.join(REAL, name + ".gz"), "rb") as file:
        return file.read()


def cut_short(name):
    return real_files(name)[:1000]   # a connection that dropped mid-transfer


def files_in(root):
    return sorted(os.listdir(root)) if os.path.isdir(root) else []


def test_offline_download_fails_cleanly(tmp_path, monkeypatch):
    fake_network(monkeypatch, dict.fromkeys(datasets.MIRRORS, offline))
    with pytest.raises(DatasetError, match="FASTRNN_DATA") as error:
        load_mnist(tmp_path / "cache")
    assert "network unreachable" in str(error.value)
    assert files_in(tmp_path / "cache") == []


@pytest.mark.parametrize("bad", [poisoned, cut_short], ids=["poisoned", "interrupted"])
def test_bad_downloads_never_land(tmp_path, monkeypatch, bad):
    calls = fake_network(monkeypatch, dict.fromkeys(datasets.MIRRORS, bad))
    with pytest.raises(DatasetError, match="could not download"):
        load_mnist(tmp_path)
    assert len(calls) == len(datasets.MIRRORS)
    assert files_in(tmp_path) == []


@have_real
def test_download_tries_mirrors_in_turn_and_verifies(tmp_path, monkeypatch):
    first, second, third = datasets.MIRRORS[:3]
    calls = fake_network(monkeypatch, {first: offline, second: poisoned, third: real_files})
    cache = tmp_path / "cache"
    x_train, y_train, x_test, y_test = load_mnist(cache)
    names = [name + ".gz" for name in datasets.FILES.values()]
    assert [url.rsplit("/", 1)[1] for url in calls] == [n for n in names for _ in range(3)]
    assert files_in(cache) == sorted(names)   # nothing else: no temporary files left
    for name in names:
        assert (cache / name).read_bytes() == real_files(name[:-3])
    assert x_train.shape == (60000, 28, 28) and list(y_test[:3]) == [7, 2, 1]


@have_real
def test_download_is_renamed_into_place_only_when_complete(tmp_path, monkeypatch):
    fake_network(monkeypatch, dict.fromkeys(datasets.MIRRORS, real_files))

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(datasets.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        load_mnist(tmp_path)
    assert files_in(tmp_path) == []
