"""PolyMNIST data: IDX parsing, the compositing recipe, writing, loading and verification.

All but the last test use small synthetic digits and backgrounds made here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_mcvae.data import mnist as mnist_mod
from pyro_mcvae.data import polymnist as poly
from pyro_mcvae.data.mnist import DataNotFoundError, find_data_root, load_mnist, parse_idx
from pyro_mcvae.data.polymnist import (
    POLYMNIST_BACKGROUNDS,
    composite_polymnist,
    generate_polymnist,
    generate_polymnist_arrays,
    load_backgrounds,
    load_polymnist,
    polymnist_to_float,
    verify_polymnist,
    write_polymnist,
)

# ----------------------------------------------------------------------------- helpers


def make_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random 'digits' uint8 (n, 28, 28), about half the pixels > 128; labels i % 10."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.arange(n) % 10


def make_background(h: int, w: int, seed: int, exact: bool = True) -> torch.Tensor:
    """(3, h, w) in [0, 1]; exact: multiples of 1/255 as from an 8-bit photograph."""
    g = torch.Generator().manual_seed(seed)
    if exact:
        return torch.randint(0, 256, (3, h, w), generator=g).float() / 255
    return torch.rand(3, h, w, generator=g)


def expected_at_offsets(digit: torch.Tensor, background: torch.Tensor) -> np.ndarray:
    """The recipe's uint8 image for every crop offset: (H-27, W-27, 3, 28, 28).

    numpy (single-threaded): tiny torch ops stall on a busy machine's thread pool.
    """
    windows = np.lib.stride_tricks.sliding_window_view(background.numpy(), (28, 28), axis=(1, 2))
    windows = windows.transpose(1, 2, 0, 3, 4)
    y = np.where(digit.numpy() > 128, np.float32(1) - windows, windows)
    return np.clip(np.floor(np.float32(255) * y + np.float32(0.5)), 0, 255).astype(np.uint8)


def matching_offsets(image: torch.Tensor, digit: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """(k, 2) crop offsets (row, col) at which ``image`` is exactly the recipe's output."""
    expected = expected_at_offsets(digit, background)
    hits = (expected == image.numpy()).reshape(*expected.shape[:2], -1).all(-1)
    return torch.from_numpy(np.argwhere(hits))


def write_idx(path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_fake_mnist(folder, n_train: int = 30, n_test: int = 20, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        digits, labels = make_digits(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", digits.numpy(), 2051, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels.numpy(), 2049, compress)


def write_fake_backgrounds(folder, count: int = 3) -> list[torch.Tensor]:
    """Lossless PNG data under the expected file names; returns the (3, H, W) tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, name in enumerate(POLYMNIST_BACKGROUNDS[:count]):
        bg = make_background(30 + k, 33 + 2 * k, seed=100 + k)
        Image.fromarray((bg * 255).round().byte().permute(1, 2, 0).numpy()).save(folder / name, format="PNG")
        out.append(bg)
    return out


@pytest.fixture
def small_set():
    """12 tuples (index 10 and 11 exist, for the numeric sort) over 3 modalities."""
    digits, labels = make_digits(40)
    bgs = [make_background(31, 35, 1), make_background(29, 40, 2), make_background(36, 30, 3)]
    images, labels = generate_polymnist_arrays(digits, labels, bgs, num_tuples=12, seed=3)
    return images, labels


@pytest.fixture
def png_root(tmp_path, small_set):
    return write_polymnist(tmp_path / "poly", {"train": small_set}, layout="png", progress=False)


# ----------------------------------------------------------------------------- MNIST / IDX


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_hand_made_idx(tmp_path, compress):
    write_fake_mnist(tmp_path, compress=compress)
    images, labels = load_mnist(tmp_path, split="test")
    ref_images, ref_labels = make_digits(20, 2)
    assert images.dtype == torch.uint8 and images.shape == (20, 28, 28)
    assert labels.dtype == torch.int64 and torch.equal(labels, ref_labels)
    assert torch.equal(images, ref_images)


def test_load_mnist_accepts_torchvision_layout(tmp_path):
    write_fake_mnist(tmp_path / "MNIST" / "raw")
    images, labels = load_mnist(tmp_path, split="train")
    assert images.shape == (30, 28, 28) and len(labels) == 30


def test_idx_truncated_bad_magic_and_corrupt_gzip(tmp_path):
    digits, labels = make_digits(5)
    good = struct.pack(">IIII", 2051, 5, 28, 28) + digits.numpy().tobytes()
    with pytest.raises(ValueError, match=r"truncated.*\(5, 28, 28\)"):
        parse_idx(good[:-10], "x.idx", 2051)
    with pytest.raises(ValueError, match="trailing bytes"):
        parse_idx(good + b"\0", "x.idx", 2051)
    with pytest.raises(ValueError, match=r"x.idx: IDX magic number 0x00000801, expected 0x00000803"):
        parse_idx(struct.pack(">II", 2049, 5) + bytes(5), "x.idx", 2051)
    with pytest.raises(ValueError, match="not an IDX magic number"):
        parse_idx(b"\x89PNG\r\n\x1a\n" + bytes(100), "x.idx")

    write_fake_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path, split="test")

    write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:4].numpy(), 2049, True)
    with pytest.raises(ValueError, match="holds 20 images but .* holds 4 labels"):
        load_mnist(tmp_path, split="test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", make_digits(20)[0].numpy(), 2051, True)
    with pytest.raises(ValueError, match="labels-idx1-ubyte.gz: IDX magic number 0x00000803, expected 0x00000801"):
        load_mnist(tmp_path, split="test")


def test_missing_mnist_and_failed_download_say_what_to_pass(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path / "empty", split="test")
    for needle in ("mnist_dir", "--mnist-dir", "PYRO_MCVAE_DATA", "download=True"):
        assert needle in str(info.value)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(tmp_path / "dl", split="test", download=True)
    message = str(info.value)
    for needle in ("could not download", "no network", "mnist_dir", "--mnist-dir", "PYRO_MCVAE_DATA"):
        assert needle in message
    assert not [p for p in (tmp_path / "dl").iterdir()]  # no partial file left


def test_download_checks_md5_and_writes_atomically(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path / "src")
    payload = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}

    def fake_urlopen(url, timeout=None):
        return io.BytesIO(payload[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(mnist_mod.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataNotFoundError, match="MD5"):  # the real checksums do not match fakes
        load_mnist(tmp_path / "dl", split="test", download=True)
    assert not list((tmp_path / "dl").iterdir())
    files = {
        split: tuple((stem, hashlib.md5(payload[stem + ".gz"]).hexdigest()) for stem, _ in pairs)
        for split, pairs in mnist_mod.MNIST_FILES.items()
    }
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", files)
    images, labels = load_mnist(tmp_path / "dl", split="test", download=True)
    assert images.shape == (20, 28, 28)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    ]


def test_find_data_root(tmp_path, monkeypatch):
    assert find_data_root(tmp_path) == tmp_path
    with pytest.raises(DataNotFoundError, match="does not exist"):
        find_data_root(tmp_path / "nope")
    monkeypatch.setenv("PYRO_MCVAE_DATA", str(tmp_path))
    assert find_data_root() == tmp_path
    monkeypatch.setenv("PYRO_MCVAE_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="PYRO_MCVAE_DATA"):
        find_data_root()


# ----------------------------------------------------------------------------- recipe


@pytest.mark.parametrize("exact", [True, False])
def test_composite_is_the_recipe_pixel_exact(exact):
    digits, _ = make_digits(16)
    bg = make_background(33, 37, seed=5, exact=exact)
    out = composite_polymnist(digits, bg, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == (16, 3, 28, 28)
    for n in range(16):
        offsets = matching_offsets(out[n], digits[n], bg)
        assert len(offsets) == 1, f"image {n}: not a recipe crop of the background"
    if exact:  # 8-bit background b: b off the digit, 255 - b on it
        r, c = matching_offsets(out[0], digits[0], bg)[0].tolist()
        b = (bg[:, r : r + 28, c : c + 28] * 255).round().byte()
        on = digits[0] > 128
        assert torch.equal(out[0][:, on], 255 - b[:, on]) and torch.equal(out[0][:, ~on], b[:, ~on])


def test_crop_offsets_cover_the_background_uniformly():
    digits, _ = make_digits(600)
    bg = make_background(29, 30, seed=6)  # 2 x 3 possible offsets
    out = composite_polymnist(digits, bg, torch.Generator().manual_seed(1), chunk_size=64)
    counts = torch.zeros(2, 3)
    for n in range(600):
        (r, c), = matching_offsets(out[n], digits[n], bg).tolist()
        counts[r, c] += 1
    assert counts.min() > 60 and counts.max() < 140  # 100 expected each


def test_composite_rejects_bad_input():
    digits, _ = make_digits(2)
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        composite_polymnist(digits[:, :20], make_background(30, 30, 0), g)
    with pytest.raises(ValueError, match="H, W >= 28"):
        composite_polymnist(digits, make_background(20, 30, 0), g)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        composite_polymnist(digits, make_background(30, 30, 0) * 2, g)


def test_generation_is_seeded():
    digits, labels = make_digits(30)
    bgs = [make_background(31, 35, 1), make_background(29, 40, 2), make_background(36, 30, 3)]
    a = generate_polymnist_arrays(digits, labels, bgs, seed=7)
    b = generate_polymnist_arrays(digits, labels, bgs, seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], generate_polymnist_arrays(digits, labels, bgs, seed=8)[0])
    assert not torch.equal(a[0], generate_polymnist_arrays(digits, labels, bgs, seed=7, split="test")[0])
    # modality k does not depend on how many modalities are generated
    fewer = generate_polymnist_arrays(digits, labels, bgs[:2], seed=7)[0]
    assert torch.equal(fewer, a[0][:, :2])


def test_tuples_share_labels_and_use_each_image_once_per_modality():
    digits, labels = make_digits(40)
    bgs = [make_background(31, 35, 1), make_background(29, 40, 2), make_background(36, 30, 3)]
    images, out_labels, sources = generate_polymnist_arrays(digits, labels, bgs, seed=0, return_sources=True)
    assert images.shape == (40, 3, 3, 28, 28) and sources.shape == (40, 3)
    assert torch.equal(out_labels, labels)
    for k in range(3):
        assert torch.equal(sources[:, k].sort().values, torch.arange(40))  # a permutation
        assert torch.equal(labels[sources[:, k]], labels)  # within each class
        for i in range(40):  # and the image is that digit on a crop of background k
            assert len(matching_offsets(images[i, k], digits[sources[i, k]], bgs[k])) == 1
    assert (sources[:, 0] != sources[:, 1]).float().mean() > 0.5  # independent permutations


def test_subset_of_tuples():
    digits, labels = make_digits(50)
    bgs = [make_background(30, 30, 1)]
    images, sub_labels, sources = generate_polymnist_arrays(
        digits, labels, bgs, num_tuples=20, seed=1, return_sources=True
    )
    assert images.shape == (20, 1, 3, 28, 28) and sub_labels.shape == (20,)
    assert len(set(sources[:, 0].tolist())) == 20
    assert torch.equal(labels[sources[:, 0]], sub_labels)
    again = generate_polymnist_arrays(digits, labels, bgs, num_tuples=20, seed=1)
    assert torch.equal(again[0], images)
    with pytest.raises(ValueError, match="num_tuples must be in 0..50"):
        generate_polymnist_arrays(digits, labels, bgs, num_tuples=51)


def test_polymnist_to_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.allclose(polymnist_to_float(x), torch.tensor([0.0, 0.2, 1.0]))
    with pytest.raises(ValueError, match="uint8"):
        polymnist_to_float(x.float())


# ----------------------------------------------------------------------------- write / load


@pytest.mark.parametrize("layout", ["png", "pt"])
def test_round_trip(tmp_path, small_set, layout):
    images, labels = small_set
    splits = {"train": small_set, "test": small_set}
    root = write_polymnist(tmp_path / "poly", splits, layout=layout, progress=False)
    for split in ("train", "test"):
        data = load_polymnist(root, split)
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
        assert data.modalities == ["m0", "m1", "m2"] and len(data) == 12
    subset = load_polymnist(root, "test", modalities=["m2", 0], layout=layout)
    assert torch.equal(subset.images, images[:, [2, 0]]) and subset.modalities == ["m2", "m0"]
    verify_polymnist(root)


def test_png_layout_on_disk_and_numeric_order(png_root, small_set):
    images, labels = small_set
    names = sorted(os.listdir(png_root / "train" / "m1"))
    assert len(names) == 12 and f"10.{labels[10]}.png" in names
    with Image.open(png_root / "train" / "m1" / f"10.{labels[10]}.png") as im:
        assert im.size == (28, 28) and im.mode == "RGB"
        assert torch.equal(torch.from_numpy(np.array(im)).permute(2, 0, 1), images[10, 1])
    ordered, _ = poly.load._scan_png_folder(png_root / "train" / "m1")
    assert [int(n.split(".")[0]) for n in ordered] == list(range(12))  # 10 after 9, not after 1


def test_both_layouts_and_auto_detection(tmp_path, small_set):
    root = write_polymnist(tmp_path / "poly", {"train": small_set}, layout="both", progress=False)
    a = load_polymnist(root, layout="png")
    b = load_polymnist(root, layout="pt")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["checksums"]["files"] == 3 * 12 + 3 + 1


def test_float_pt_is_converted(tmp_path, small_set):
    images, labels = small_set
    split = tmp_path / "train"
    split.mkdir()
    torch.save(images[:, 0].float() / 255, split / "m0.pt")
    torch.save(labels, split / "labels.pt")
    data = load_polymnist(tmp_path)
    assert torch.equal(data.images[:, 0], images[:, 0])


def test_png_cache_is_used_and_invalidated(png_root, small_set, monkeypatch):
    first = load_polymnist(png_root, cache=True)
    assert list((png_root / "train").glob(".cache-*.pt"))

    def no_decoding(path):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(poly.load, "_decode_png", no_decoding)
        second = load_polymnist(png_root, cache=True)
    assert torch.equal(first.images, second.images)
    path = next((png_root / "train" / "m0").iterdir())
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    third = load_polymnist(png_root, cache=True)
    index = int(path.name.split(".")[0])
    assert int(third.images[index, 0].sum()) == 0


def _png(root, modality, index):
    (path,) = (root / "train" / f"m{modality}").glob(f"{index}.*.png")
    return path


def test_corrupt_truncated_and_wrong_pngs_are_named(png_root):
    path = _png(png_root, 1, 4)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=rf"{path.name}: corrupt or truncated PNG"):
        load_polymnist(png_root)
    path.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=rf"{path.name}: corrupt or truncated PNG"):
        load_polymnist(png_root)
    Image.fromarray(np.zeros((30, 28, 3), np.uint8)).save(path, format="PNG")
    with pytest.raises(ValueError, match=rf"{path.name}: 28x30 RGB image, expected 28x28 RGB"):
        load_polymnist(png_root)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path, format="PNG")
    with pytest.raises(ValueError, match=rf"{path.name}: 28x28 L image, expected 28x28 RGB"):
        load_polymnist(png_root)
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(path, format="JPEG")
    with pytest.raises(ValueError, match=rf"{path.name}: holds JPEG data, expected a PNG"):
        load_polymnist(png_root)


def test_missing_files_and_mismatched_labels(png_root):
    path = _png(png_root, 2, 5)
    label = int(path.name.split(".")[1])
    path.unlink()
    with pytest.raises(ValueError, match=r"m2: file 5\.\*\.png is missing"):
        load_polymnist(png_root)
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(path.with_name(f"5.{(label + 1) % 10}.png"))
    with pytest.raises(ValueError, match=r"label mismatch at index 5: .*m0/5\..*m2/5\."):
        load_polymnist(png_root)
    path.with_name(f"5.{(label + 1) % 10}.png").unlink()
    _png(png_root, 2, 11).rename(path)  # now m2 has 11 files
    with pytest.raises(ValueError, match="holds 11 PNGs but .*m0 holds 12"):
        load_polymnist(png_root)
    (png_root / "train" / "m0" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"x.png: PNG name must be"):
        load_polymnist(png_root)
    with pytest.raises(ValueError, match="test not found"):
        load_polymnist(png_root, "test")


def test_bad_pt_files(tmp_path, small_set):
    images, labels = small_set
    split = tmp_path / "train"
    split.mkdir()
    torch.save(labels, split / "labels.pt")
    torch.save(images[:, 0, 0], split / "m0.pt")
    with pytest.raises(ValueError, match=r"m0.pt: shape \(12, 28, 28\), expected \(N, 3, 28, 28\)"):
        load_polymnist(tmp_path)
    torch.save(images[:5, 0], split / "m0.pt")
    with pytest.raises(ValueError, match="m0.pt holds 5 images but .*labels.pt holds 12"):
        load_polymnist(tmp_path)
    torch.save(images[:, 0].float(), split / "m0.pt")
    with pytest.raises(ValueError, match=r"m0.pt: float images must lie in \[0, 1\]"):
        load_polymnist(tmp_path)
    (split / "m0.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="m0.pt: cannot load"):
        load_polymnist(tmp_path)
    torch.save(images[:, 0], split / "m0.pt")
    torch.save(labels.float(), split / "labels.pt")
    with pytest.raises(ValueError, match="labels.pt: labels of shape"):
        load_polymnist(tmp_path)


def test_verify_detects_changes(png_root):
    verify_polymnist(png_root)
    path = _png(png_root, 0, 3)
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{path.name} was modified"):
        verify_polymnist(png_root)


def test_verify_detects_missing_and_extra_files(png_root):
    extra = png_root / "train" / "m0" / "99.1.png"
    extra.write_bytes(b"")
    with pytest.raises(ValueError, match="99.1.png is not listed"):
        verify_polymnist(png_root)
    extra.unlink()
    path = _png(png_root, 1, 0)
    path.unlink()
    with pytest.raises(ValueError, match=rf"{path.name} is missing"):
        verify_polymnist(png_root)
    (png_root / "manifest.json").unlink()
    with pytest.raises(ValueError, match="manifest.json is missing"):
        verify_polymnist(png_root)


def test_write_refuses_existing_and_cleans_up_when_interrupted(tmp_path, small_set, monkeypatch):
    root = write_polymnist(tmp_path / "poly", {"train": small_set}, progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_polymnist(root, {"train": small_set}, progress=False)
    calls = []

    def fail_second(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    real = poly.store._write_png_folder
    monkeypatch.setattr(poly.store, "_write_png_folder", fail_second)
    with pytest.raises(KeyboardInterrupt):
        write_polymnist(tmp_path / "other", {"train": small_set}, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poly"]  # no half data set
    monkeypatch.setattr(poly.store, "_write_png_folder", real)
    write_polymnist(root, {"test": small_set}, progress=False, overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == ["SHA256SUMS", "manifest.json", "test"]


# ----------------------------------------------------------------------------- generate_polymnist


def test_generate_polymnist_end_to_end(tmp_path):
    write_fake_mnist(tmp_path / "mnist")
    bgs = write_fake_backgrounds(tmp_path / "bg", 2)
    loaded = load_backgrounds(tmp_path / "bg", 2)
    assert all(torch.equal(a, b) for a, b in zip(loaded, bgs))
    out = generate_polymnist(
        tmp_path / "poly", tmp_path / "mnist", tmp_path / "bg", num_modalities=2, seed=4,
        num_test=10, layout="both", progress=False,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["recipe_version"] == poly.RECIPE_VERSION
    assert manifest["splits"]["train"]["tuples"] == 30 and manifest["splits"]["test"]["tuples"] == 10
    assert manifest["backgrounds"]["m1"]["file"] == POLYMNIST_BACKGROUNDS[1]
    bg_hash = hashlib.sha256((tmp_path / "bg" / POLYMNIST_BACKGROUNDS[1]).read_bytes()).hexdigest()
    assert manifest["backgrounds"]["m1"]["sha256"] == bg_hash
    assert "package_version" in manifest and len(manifest["mnist_files"]) == 4
    verify_polymnist(out)
    test = load_polymnist(out, "test", layout="png")
    assert torch.equal(test.images, load_polymnist(out, "test", layout="pt").images)
    assert test.images.shape == (10, 2, 3, 28, 28)
    digits, labels = load_mnist(tmp_path / "mnist", "test")
    expected = generate_polymnist_arrays(digits, labels, loaded, num_tuples=10, seed=4, split="test")
    assert torch.equal(test.images, expected[0]) and torch.equal(test.labels, expected[1])
    # the command line gives the same bytes
    poly.main([str(tmp_path / "cli"), "--mnist-dir", str(tmp_path / "mnist"), "--backgrounds-dir",
               str(tmp_path / "bg"), "--num-modalities", "2", "--seed", "4", "--num-test", "10"])
    png_lines = [line for line in (out / "SHA256SUMS").read_text().splitlines() if not line.endswith(".pt")]
    assert (tmp_path / "cli" / "SHA256SUMS").read_text().splitlines() == png_lines


def test_generate_without_data_names_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(poly.build, "find_data_root", lambda explicit=None: None)
    with pytest.raises(FileNotFoundError) as info:
        generate_polymnist(tmp_path / "poly", progress=False)
    for needle in ("mnist_dir", "--mnist-dir", "backgrounds_dir", "--backgrounds-dir", "PYRO_MCVAE_DATA"):
        assert needle in str(info.value)
    assert not (tmp_path / "poly").exists()


def test_load_backgrounds_errors(tmp_path):
    write_fake_backgrounds(tmp_path, 2)
    with pytest.raises(DataNotFoundError, match=rf"{POLYMNIST_BACKGROUNDS[2]} not found.*--backgrounds-dir"):
        load_backgrounds(tmp_path, 3)
    (tmp_path / POLYMNIST_BACKGROUNDS[1]).write_bytes(b"broken")
    with pytest.raises(ValueError, match=rf"{POLYMNIST_BACKGROUNDS[1]}: cannot read"):
        load_backgrounds(tmp_path, 2)
    with pytest.raises(ValueError, match="num_modalities must be in 1..9"):
        load_backgrounds(tmp_path, 10)


# ----------------------------------------------------------------------------- real data


def test_real_mnist_test_split():
    root = find_data_root()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("shared data (../shared/data or PYRO_MCVAE_DATA) with mnist/ is not available")
    images, labels = load_mnist(root / "mnist", split="test")
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert int(labels[0]) == 7
