"""A folder as one streamed `.tar.gz`, written as it is sent: no temporary file, and memory
bounded by one read chunk whatever the size of the files (model weights)."""

import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1024 * 1024
# Weights (most of the bytes) hardly compress; the fastest level keeps a download CPU-cheap.
LEVEL = 1
BLOCK = tarfile.BLOCKSIZE


def stream_tar_gz(members: list[tuple[str, Path]]) -> Iterator[bytes]:
    """A gzip-compressed POSIX tar of `(name in the archive, file)` pairs, in chunks."""
    gzip = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    for name, path in members:
        stat = path.stat()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        yield gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT))
        sent = 0
        with path.open("rb") as handle:
            while sent < info.size and (chunk := handle.read(min(CHUNK, info.size - sent))):
                sent += len(chunk)
                if out := gzip.compress(chunk):
                    yield out
        if sent != info.size:  # the file shrank while we read it: the archive would lie
            raise OSError(f"{name} changed while it was archived")
        if padding := -info.size % BLOCK:
            yield gzip.compress(b"\0" * padding)
    yield gzip.compress(b"\0" * (2 * BLOCK)) + gzip.flush()  # tar's end-of-archive marker
