"""Set-up step for a fresh machine: download Imagenette v2, check it, write it at 224 px.

    fast.ai's imagenette2-320.tgz ─► .part file (resumed with HTTP Range if interrupted)
        ─► MD5 check against the published value ─► safe extraction, one member at a time
        ─► shorter side to 224, centre crop 224x224, RGB ─► DEST/{train,val}/WNID/NAME.JPEG

``python -m splitnet.data.download imagenette`` writes to the default folder that every command
looks in (``~/.local/share/splitnet/imagenette-224``); ``--dest`` writes elsewhere. The
archive is 326 MB. A wrong hash deletes the download and says so; nothing half-written is
ever left where the loaders look (the folder appears complete or not at all).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from splitnet.data.imagenette import DEFAULT_IMAGENETTE_DIR


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    size: int | None = None


#: fast.ai's published Imagenette v2 (shorter side 320 px) and its MD5, as torchvision's
#: ``Imagenette`` dataset class checks it.
IMAGENETTE_320 = Archive("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz",
                         "3df6f0d01a2c9592104656642f5e78a3", 341_663_724)
SIZE = 224
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """The archive could not be fetched, or its hash is wrong."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(archive: Archive, target: Path, timeout_s: float = 60.0,
             show_progress: bool = True) -> Path:
    """Fetch ``archive`` to ``target``, resuming a ``.part`` file left by an interrupted run.

    A server that ignores the Range request gets a clean restart. The finished file is
    checked against the archive's MD5 before it is renamed into place.
    """
    if target.is_file() and md5_of(target) == archive.md5:
        return target
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(archive.url)
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            resumed = have > 0 and response.status == 206
            mode = "ab" if resumed else "wb"
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else archive.size
            chunks = iter(lambda: response.read(CHUNK), b"")
            with part.open(mode) as handle:
                for block in tqdm(chunks, desc=f"downloading {archive.url.rsplit('/', 1)[-1]}",
                                      total=None if total is None else -(-(total - have) // CHUNK),
                                      disable=None if show_progress else True):
                    handle.write(block)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already complete
            pass
        else:
            raise DownloadError(f"download of {archive.url} failed: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"download of {archive.url} failed: {error}; run the same command "
                            "again to resume") from None
    got = md5_of(part)
    if got != archive.md5:
        part.unlink()
        raise DownloadError(f"{archive.url}: MD5 {got} is not the published {archive.md5}; "
                            "the download was deleted, run the command again")
    part.replace(target)
    return target


def _resize_to_square(data: bytes, size: int = SIZE) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (size, size))
        rgb = img.convert("RGB")
    scale = size / min(rgb.size)
    width, height = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
    rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    out = io.BytesIO()
    rgb.crop((left, top, left + size, top + size)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def extract_resized(tgz: Path, dest: Path, size: int = SIZE,
                    show_progress: bool = True) -> int:
    """Write every ``*/{train,val}/WNID/*.JPEG`` member of ``tgz`` resized into ``dest``.

    Member names are never used as paths directly: only their last three parts, each
    checked, so an archive cannot write outside ``dest``. Returns the number of images.
    """
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    count = 0
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tqdm(tar, desc="resizing to 224 px",
                               disable=None if show_progress else True):
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3:
                continue
            split, wnid, name = parts[-3:]
            if split not in ("train", "val") or not wnid.startswith("n") or \
                    not name.lower().endswith((".jpeg", ".jpg")) or "/" in name or \
                    name.startswith("."):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            out = staging / split / wnid / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(_resize_to_square(handle.read(), size))
            count += 1
    if count == 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{tgz} holds no SPLIT/WNID/*.JPEG images")
    shutil.rmtree(dest, ignore_errors=True)
    staging.replace(dest)
    return count


def fetch_imagenette(dest: Path = DEFAULT_IMAGENETTE_DIR, archive: Archive = IMAGENETTE_320,
                     keep_archive: bool = False, show_progress: bool = True) -> Path:
    """Download, check, resize and write Imagenette; returns ``dest``."""
    tgz = dest.with_name(archive.url.rsplit("/", 1)[-1])
    download(archive, tgz, show_progress=show_progress)
    extract_resized(tgz, dest, show_progress=show_progress)
    if not keep_archive:
        tgz.unlink()
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.data.download",
        description="Fetch a data set the models need. 'imagenette' downloads fast.ai's "
                    "Imagenette v2 (326 MB, resumable), checks its MD5, resizes every image to "
                    "224x224 (shorter side to 224, centre crop) and writes the ImageFolder "
                    "layout that --data-dir and $SPLITNET_IMAGENETTE_DIR expect. Fashion-MNIST "
                    "comes from the Debian package dataset-fashion-mnist instead.")
    parser.add_argument("dataset", choices=["imagenette"])
    parser.add_argument("--dest", type=Path, default=DEFAULT_IMAGENETTE_DIR,
                        help="where to write it (default: %(default)s)")
    parser.add_argument("--url", default=IMAGENETTE_320.url,
                        help="archive to fetch (default: fast.ai's imagenette2-320.tgz)")
    parser.add_argument("--md5", default=IMAGENETTE_320.md5,
                        help="the archive's published MD5 (default: %(default)s)")
    parser.add_argument("--keep-archive", action="store_true",
                        help="keep the .tgz next to the folder after extracting")
    args = parser.parse_args(argv)
    archive = Archive(args.url, args.md5)
    try:
        dest = fetch_imagenette(args.dest, archive, args.keep_archive)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
