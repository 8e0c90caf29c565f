"""Objects on an S3-compatible store (AWS, MinIO, SeaweedFS, R2...), through boto3.

boto3 because it is the reference client every S3-compatible store tests against, its
transfer manager does multipart uploads with parallel parts by itself, and it presigns URLs
and copies server-side. Measured against obstore on SeaweedFS (bench/storage.py, 32 MiB on
a loaded 2-core machine) obstore moved the same files about 2x faster (our boto3 upload
also hashes each file for its sha256): worth revisiting if the store is the bottleneck;
the calls are all in this one class.

Every object carries the sha256 of its bytes as metadata (`x-amz-meta-sha256`), written on
upload and checked on every download to a local file.
"""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:  # boto3-stubs, a dev dependency: the type checker's, not the service's
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

CHUNK = 1024 * 1024
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class ChecksumMismatch(OSError):
    """A downloaded object's bytes do not have the sha256 recorded when it was uploaded."""


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in NOT_FOUND


class S3Store:
    """One bucket and key prefix (`s3://bucket/prefix`); names are relative to the prefix."""

    def __init__(self, url: str, *, endpoint_url: str | None, multipart_bytes: int) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"storage_url: '{url}' is not s3://bucket[/prefix]")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        # Path-style addressing: stores other than AWS rarely serve bucket subdomains.
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 8, "mode": "standard"},
            max_pool_connections=16))
        self.transfer = TransferConfig(multipart_threshold=multipart_bytes,
                                       multipart_chunksize=max(multipart_bytes, 5 * CHUNK))

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, path: Path, sha256: str) -> None:
        """Upload a local file (multipart past the threshold), its sha256 as metadata."""
        self.client.upload_file(str(path), self.bucket, self.key(name),
                                ExtraArgs={"Metadata": {"sha256": sha256}}, Config=self.transfer)

    def get(self, name: str, path: Path) -> None:
        """Download to `path` (through a partial file), refused unless the sha256 matches."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from exc
            raise
        expected = response.get("Metadata", {}).get("sha256")
        digest = hashlib.sha256()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("wb") as out:
            for chunk in response["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if expected and digest.hexdigest() != expected:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{name}: sha256 {digest.hexdigest()} is not the "
                                   f"{expected} recorded at upload")
        os.replace(partial, path)

    def size(self, name: str) -> int:
        try:
            return int(self.client.head_object(Bucket=self.bucket,
                                               Key=self.key(name))["ContentLength"])
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from exc
            raise

    def read(self, name: str) -> bytes:
        return b"".join(self.chunks(name))

    def chunks(self, name: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(name) from exc
            raise
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def names(self, prefix: str) -> list[str]:
        """Every object name under `prefix/` (relative to the store's prefix)."""
        full = self.key(prefix.rstrip("/") + "/")
        strip = len(self.key(""))
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full):
            out.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return out

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # the API's batch limit
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": self.key(n)} for n in names[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch,
                                                                   "Quiet": True})

    def copy(self, source: str, target: str) -> None:
        """A server-side copy (metadata, sha256 included, goes with it)."""
        self.client.copy({"Bucket": self.bucket, "Key": self.key(source)}, self.bucket,
                         self.key(target), Config=self.transfer)

    def url(self, name: str, filename: str, seconds: int) -> str:
        return self.client.generate_presigned_url("get_object", ExpiresIn=seconds, Params={
            "Bucket": self.bucket, "Key": self.key(name),
            "ResponseContentDisposition": f'attachment; filename="{filename}"'})

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)
