"""The camera workload's data path: ImageFolder loading, the download step, torchvision
weights, and the int8 head."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitnet.data import DatasetNotFoundError
from splitnet.data.download import Archive, DownloadError, download, fetch_imagenette
from splitnet.data.imagenette import (
    IMAGENETTE_DIR_ENV,
    find_imagenette,
    holdout_split,
    load_image_folder,
)
from splitnet.images import ImageDecodeError
from splitnet.model.resnet import ResNet
from splitnet.training.camera import load_torchvision_weights


def jpeg(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(
        out, format="JPEG")
    return out.getvalue()


def write_folder(root: Path) -> None:
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01440764", "n02102040")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(3):
                (folder / f"img{i}.JPEG").write_bytes(jpeg((224, 224), seed=c * 10 + i))
    (root / "train" / "n01440764" / "grey.JPEG").write_bytes(jpeg((224, 224), "L"))


# ---------------------------------------------------------------------- loader
def test_image_folder_reads_rgb_and_greyscale(tmp_path):
    write_folder(tmp_path)
    split = load_image_folder(tmp_path / "train", workers=1, show_progress=False)
    assert split.images.shape == (7, 224, 224, 3) and split.images.dtype == np.uint8
    assert split.classes == ("n01440764", "n02102040")
    assert split.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    grey = split.images[split.paths.index(str(tmp_path / "train/n01440764/grey.JPEG"))]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    # the cache returns the same arrays
    cached = load_image_folder(tmp_path / "train", cache_dir=tmp_path / "c", workers=1,
                               show_progress=False)
    again = load_image_folder(tmp_path / "train", cache_dir=tmp_path / "c", workers=1,
                              show_progress=False)
    assert (np.asarray(again.images) == cached.images).all()


def test_a_corrupt_image_is_named(tmp_path):
    write_folder(tmp_path)
    bad = tmp_path / "val" / "n02102040" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.JPEG"):
        load_image_folder(tmp_path / "val", workers=1, show_progress=False)


def test_lookup_order_data_dir_then_environment(tmp_path, monkeypatch):
    write_folder(tmp_path / "a")
    write_folder(tmp_path / "b")
    monkeypatch.setenv(IMAGENETTE_DIR_ENV, str(tmp_path / "b"))
    assert find_imagenette(tmp_path / "a") == tmp_path / "a"
    assert find_imagenette() == tmp_path / "b"
    with pytest.raises(DatasetNotFoundError, match="python -m splitnet.data.download imagenette"):
        find_imagenette(tmp_path / "missing")


def test_holdout_split_is_fixed_and_per_class():
    labels = np.repeat(np.arange(10), 100)
    train, held = holdout_split(labels, 0.1, seed=0)
    assert len(held) == 100 and np.bincount(labels[held]).tolist() == [10] * 10
    assert not set(train) & set(held) and len(train) + len(held) == 1000
    assert (holdout_split(labels, 0.1, seed=0)[1] == held).all()


# ---------------------------------------------------------------------- download step
def make_archive(path: Path) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for split, wnid, name, size in (("train", "n01440764", "a.JPEG", (320, 400)),
                                        ("train", "n02102040", "b.JPEG", (480, 320)),
                                        ("val", "n01440764", "c.JPEG", (320, 320))):
            data = jpeg(size)
            info = tarfile.TarInfo(f"imagenette2-320/{split}/{wnid}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../../escape.JPEG")  # must never be written outside dest
        evil.size = 3
        tar.addfile(evil, io.BytesIO(b"abc"))
    return path.read_bytes()


class Server:
    """A 127.0.0.1 HTTP server for one file, honouring Range unless told not to."""

    def __init__(self, data: bytes, ranges: bool = True) -> None:
        self.data, self.ranges, self.requests = data, ranges, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.headers.get("Range"))
                body, status = outer.data, 200
                wanted = self.headers.get("Range")
                if wanted and outer.ranges:
                    start = int(wanted.split("=")[1].split("-")[0])
                    body, status = outer.data[start:], 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/imagenette2-320.tgz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def archive(tmp_path):
    data = make_archive(tmp_path / "src.tgz")
    return data, hashlib.md5(data).hexdigest()


def test_download_resize_and_write(tmp_path, archive):
    data, md5 = archive
    server = Server(data)
    try:
        dest = fetch_imagenette(tmp_path / "out" / "imagenette-224", Archive(server.url, md5),
                                show_progress=False)
    finally:
        server.close()
    images = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.JPEG"))
    assert images == ["train/n01440764/a.JPEG", "train/n02102040/b.JPEG",
                      "val/n01440764/c.JPEG"]
    for path in dest.rglob("*.JPEG"):
        assert Image.open(path).size == (224, 224)
    assert not list(tmp_path.rglob("escape.JPEG"))
    assert find_imagenette(dest) == dest


def test_a_hash_mismatch_is_refused_and_deleted(tmp_path, archive):
    data, _ = archive
    server = Server(data)
    try:
        with pytest.raises(DownloadError, match="MD5"):
            download(Archive(server.url, "0" * 32), tmp_path / "a.tgz", show_progress=False)
    finally:
        server.close()
    assert not (tmp_path / "a.tgz").exists() and not (tmp_path / "a.tgz.part").exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_a_partial_download_resumes_or_restarts(tmp_path, archive, ranges):
    data, md5 = archive
    (tmp_path / "a.tgz.part").write_bytes(data[: len(data) // 2])
    server = Server(data, ranges=ranges)
    try:
        path = download(Archive(server.url, md5), tmp_path / "a.tgz", show_progress=False)
    finally:
        server.close()
    assert path.read_bytes() == data
    assert server.requests == [f"bytes={len(data) // 2}-"]
    assert not (tmp_path / "a.tgz.part").exists()


# ---------------------------------------------------------------------- torchvision weights
def torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """Key names and shapes of ``torchvision.models.resnet18().state_dict()``, written out
    from torchvision's ``resnet.py`` (BasicBlock: conv1, bn1, conv2, bn2, downsample.0/1)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        shapes.update({f"{name}.weight": (c,), f"{name}.bias": (c,),
                       f"{name}.running_mean": (c,), f"{name}.running_var": (c,),
                       f"{name}.num_batches_tracked": ()})

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            cin = inplanes if block == 0 else planes
            shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            bn(f"{p}.bn1", planes)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def test_a_torchvision_state_dict_loads(tmp_path):
    shapes = torchvision_resnet18_shapes()
    assert len(shapes) == 122
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=gen) if s else torch.tensor(0)) for k, s in
             shapes.items()}
    ResNet(num_classes=1000).load_state_dict(state, strict=True)  # the same layout exactly
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    network = ResNet(num_classes=10)
    assert load_torchvision_weights(network, path) == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(network.layer3[0].downsample[0].weight,  # type: ignore[index]
                               state["layer3.0.downsample.0.weight"])
