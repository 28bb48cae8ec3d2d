import subprocess
import sys

import numpy as np
import pytest

from splitnet.data import DatasetNotFoundError
from splitnet.data.fashion_mnist import CLASS_NAMES, load_split


def test_real_fashion_mnist_splits(test_split):
    train = load_split("train")
    assert train.images.shape == (60000, 28, 28) and len(test_split) == 10000
    assert train.images.dtype == np.uint8
    assert sorted(np.unique(test_split.labels)) == list(range(len(CLASS_NAMES)))
    assert np.bincount(test_split.labels).tolist() == [1000] * 10
    x, y = test_split.tensors(limit=5)
    assert tuple(x.shape) == (5, 1, 28, 28) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0


def test_missing_files_name_the_package_and_the_option(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("test", data_dir=tmp_path)
    message = str(info.value)
    assert "dataset-fashion-mnist" in message and "--data-dir" in message
    assert str(tmp_path) in message


def test_any_folder_with_the_four_idx_files_works(tmp_path):
    import shutil

    from splitnet.data.fashion_mnist import DEBIAN_DATA_DIR

    for f in DEBIAN_DATA_DIR.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    assert len(load_split("test", data_dir=tmp_path)) == 10000


def test_command_line_reports_missing_data_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "splitnet.train", "--data-dir", str(tmp_path),
         "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "dataset-fashion-mnist" in result.stderr
    assert "Traceback" not in result.stderr


def test_card_and_evaluation_halves_are_fixed_and_disjoint():
    from splitnet.data.eval_sets import card_images, eval_images

    card, scored = card_images("mnv2_fmnist"), eval_images("mnv2_fmnist")
    assert len(card) == len(scored) == 5000
    assert "half A" in card.description and "half B" in scored.description
    together = np.concatenate([card.images, scored.images]).reshape(10000, -1)
    assert len(np.unique(together, axis=0)) == len(np.unique(
        load_split("test").images.reshape(10000, -1), axis=0))
    assert (card_images("mnv2_fmnist").labels == card.labels).all()


def test_the_stream_is_every_eval_image_once_in_a_fixed_mixed_order():
    from splitnet.data.eval_sets import eval_images, stream_images, stream_labels

    scored, stream = eval_images("mnv2_fmnist"), stream_images("mnv2_fmnist")
    assert sorted(stream.labels.tolist()) == sorted(scored.labels.tolist())
    assert (stream.labels == stream_images("mnv2_fmnist").labels).all()  # fixed
    assert len(set(stream.labels[:50].tolist())) == 10  # the first inputs mix every class
    window = stream_images("mnv2_fmnist", window=slice(5, 9))  # a run's stretch of it
    assert (window.images == stream.images[5:9]).all()
    assert (window.labels == stream.labels[5:9]).all()
    assert (stream_labels("mnv2_fmnist") == stream.labels).all()
