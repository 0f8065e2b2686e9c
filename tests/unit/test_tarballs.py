"""A unified image's rootfs/ as a plain rootfs tarball (image export)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cman._sys.tarballs import strip_prefix


def test_strip_prefix(tmp_path: Path) -> None:
    src = tmp_path / "unified.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        for name, data in (("metadata.yaml", b"architecture: x86_64\n"), ("rootfs/bin/busybox", b"ELF")):
            info = tarfile.TarInfo(name)
            info.size, info.uid = len(data), 1000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("rootfs/bin/sh")
        link.type, link.linkname = tarfile.LNKTYPE, "rootfs/bin/busybox"
        tar.addfile(link)
    with open(src, "rb") as fh:
        out = strip_prefix(fh, tmp_path / "rootfs.tar")
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar}
        assert sorted(members) == ["bin/busybox", "bin/sh"]
        assert members["bin/sh"].linkname == "bin/busybox" and members["bin/busybox"].uid == 1000
        fh2 = tar.extractfile("bin/busybox")
        assert fh2 is not None and fh2.read() == b"ELF"
    assert list(tmp_path.iterdir()) != [] and not list(tmp_path.glob(".*.tmp"))
