"""A folder as one streamed `.tar.gz`, written as it is sent: no temporary file, and memory
bounded by one read chunk whatever the size of the files (model weights)."""

import tarfile
import time
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunesmith.storage import Blob

CHUNK = 1024 * 1024
# Weights (most of the bytes) hardly compress; the fastest level keeps a download CPU-cheap.
LEVEL = 1
BLOCK = tarfile.BLOCKSIZE


def stream_tar_gz(members: "list[tuple[str, Blob]]") -> Iterator[bytes]:
    """A gzip-compressed POSIX tar of `(name in the archive, stored file)` pairs, in chunks
    (a file on local disk or in the store: tunesmith/storage)."""
    gzip = zlib.compressobj(LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    started = int(time.time())
    for name, blob in members:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = blob.size, started, 0o644
        yield gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT))
        sent = 0
        for chunk in blob.chunks():
            chunk = chunk[:info.size - sent]
            sent += len(chunk)
            if out := gzip.compress(chunk):
                yield out
            if sent >= info.size:
                break
        if sent != info.size:  # the file shrank while we read it: the archive would lie
            raise OSError(f"{name} changed while it was archived")
        if padding := -info.size % BLOCK:
            yield gzip.compress(b"\0" * padding)
    yield gzip.compress(b"\0" * (2 * BLOCK)) + gzip.flush()  # tar's end-of-archive marker
