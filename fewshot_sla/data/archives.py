"""A folder, a zip or a tar archive seen the same way: ``FileTree.open(path)`` lists the regular
files as relative POSIX paths and ``tree.read(relpath)`` returns one file's bytes (no extraction).
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from .base import DataError
from .images import walk_files

__all__ = ["FileTree", "is_archive", "source_fingerprint"]

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def is_archive(path: str | Path) -> bool:
    """True when ``path`` names a zip or tar file (by suffix)."""
    return str(path).lower().endswith(_ARCHIVE_SUFFIXES)


class FileTree:
    """Read-only view of the files under ``path``, a folder or a zip/tar archive (``kind``)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._tar_members: dict[str, tarfile.TarInfo] = {}
        self._files: list[str] | None = None

    @classmethod
    def open(cls, path: str | Path) -> FileTree:
        """Open a folder or archive (``FileNotFoundError`` when it does not exist)."""
        path = Path(path)
        if path.is_dir():
            return cls(path, "folder")
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        name = path.name.lower()
        if name.endswith(".zip") or zipfile.is_zipfile(path):
            tree = cls(path, "zip")
            try:
                tree._zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise DataError(f"{path}: not a readable zip ({exc}); download it again") from None
            return tree
        if tarfile.is_tarfile(path):
            tree = cls(path, "tar")
            tree._tar = tarfile.open(path)  # noqa: SIM115 - closed by FileTree.close
            return tree
        raise DataError(f"{path}: neither a folder nor a zip or tar archive")

    def files(self) -> list[str]:
        """Sorted relative POSIX paths of all regular files."""
        if self._files is None:
            if self.kind == "folder":
                out = walk_files(self.path)  # symbolic-link cycles are cut
            elif self.kind == "zip":
                out = [i.filename for i in self._zip.infolist() if not i.is_dir()]
            else:
                self._tar_members = {m.name: m for m in self._tar.getmembers() if m.isfile()}
                out = list(self._tar_members)
            self._files = sorted(out)
        return self._files

    def read(self, relpath: str) -> bytes:
        """The bytes of one file (``relpath`` as returned by :meth:`files`)."""
        if self.kind == "folder":
            return (self.path / relpath).read_bytes()
        if self.kind == "zip":
            return self._zip.read(relpath)
        if not self._tar_members:
            self.files()
        f = self._tar.extractfile(self._tar_members[relpath])
        return f.read()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> FileTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileTree({self.kind}: {self.path})"


def source_fingerprint(path: str | Path) -> list:
    """Cache-key identity of a data source: name, size and mtime of ``path`` and of a folder's
    direct entries (deeper changes are not noticed)."""
    path = Path(path)
    if not path.exists():
        return [str(path), None]
    st = path.stat()
    out = [str(path.resolve()), st.st_size if path.is_file() else 0, st.st_mtime_ns]
    if path.is_dir():
        for child in sorted(path.iterdir()):
            try:
                cst = child.stat()
            except OSError:  # a dangling link: its own entry
                cst = child.lstat()
            out.append([child.name, cst.st_size if child.is_file() else 0, cst.st_mtime_ns])
    return out
