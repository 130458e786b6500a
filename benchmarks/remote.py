"""osmo on object stores vs a plain copy of the same bytes, on moto (S3) and Azurite (Azure Blob).

For each server, in one run: upload the corpus with osmo and with a plain recursive ``put`` of the
same folder (s3fs / adlfs), then download it both ways; report MB/s for each, the osmo/plain ratios,
and osmo's requests per GB (counted by ``MeteredBlobStore`` around the backend).

    python -m benchmarks.remote [--scale 0.2] [--servers s3,azure] [--concurrency 8] [--json]

Both servers run on 127.0.0.1 on this machine (moto keeps objects in memory, Azurite on disk), so
the figures measure client overhead and request counts more than network bandwidth; they are
compared within one run only. Needs the test services installed (``.ci/install-services.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def start_server(kind: str):
    if kind == "s3":
        from servers.moto_s3 import MotoS3Server

        server = MotoS3Server()
        server.start()
        bucket = server.make_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        os.environ.update(server.env())
        fs_kwargs = {"key": server.key, "secret": server.secret, "endpoint_url": server.endpoint_url}
        return server, f"s3://{bucket}", bucket, fs_kwargs
    from servers.azurite import AzuriteServer

    server = AzuriteServer()
    server.start()
    container = server.make_container(f"bench-{uuid.uuid4().hex[:8]}")
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = server.connection_string
    return server, f"az://{container}", container, {"connection_string": server.connection_string}


def plain_fs(kind: str, fs_kwargs: dict):
    if kind == "s3":
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **fs_kwargs)
    import adlfs

    return adlfs.AzureBlobFileSystem(skip_instance_cache=True, use_listings_cache=False, **fs_kwargs)


def bench_osmo(url: str, src: Path, work: Path, concurrency: int) -> dict:
    from osmo_store.blob import open_blob_store
    from osmo_store.blob.wrappers import MeteredBlobStore
    from osmo_store.repository import Repository, init_store
    from osmo_store.transfer.upload import UploadRequest

    blob = open_blob_store(f"{url}/osmo", {"concurrency": concurrency})
    config = init_store(blob)
    metered = MeteredBlobStore(blob)
    repo = Repository(metered, config, cache_dir=str(work / "cache-up"))
    start = time.perf_counter()
    result = repo.upload(UploadRequest("bench", [str(src)]))
    up_s = time.perf_counter() - start
    up_requests = metered.total_requests()
    repo.close()

    metered = MeteredBlobStore(open_blob_store(f"{url}/osmo", {"concurrency": concurrency}))
    repo = Repository(metered, config, cache_dir=str(work / "cache-down"))  # a fresh machine
    dest = work / "osmo-out"
    start = time.perf_counter()
    repo.log.sync()
    repo.download("bench", str(dest))
    down_s = time.perf_counter() - start
    down_requests = metered.total_requests()
    repo.close()
    shutil.rmtree(dest)
    return {"upload_s": up_s, "download_s": down_s, "stored_bytes": result.stored_bytes,
            "upload_requests": up_requests, "download_requests": down_requests}


def bench_plain(kind: str, fs_kwargs: dict, root: str, src: Path, work: Path) -> dict:
    fs = plain_fs(kind, fs_kwargs)
    start = time.perf_counter()
    fs.put(str(src), f"{root}/plain", recursive=True)
    up_s = time.perf_counter() - start
    dest = work / "plain-out"
    fs = plain_fs(kind, fs_kwargs)
    start = time.perf_counter()
    fs.get(f"{root}/plain", str(dest), recursive=True)
    down_s = time.perf_counter() - start
    got = tree_bytes(dest)
    shutil.rmtree(dest)
    return {"upload_s": up_s, "download_s": down_s, "downloaded_bytes": got}


def run(kind: str, src: Path, work: Path, concurrency: int) -> dict:
    server, url, root, fs_kwargs = start_server(kind)
    try:
        logical = tree_bytes(src)
        osmo = bench_osmo(url, src, work, concurrency)
        plain = bench_plain(kind, fs_kwargs, root, src, work)
    finally:
        server.stop()
    mb = logical / 1e6
    gb = logical / 1e9
    return {
        "server": kind, "logical_bytes": logical,
        "osmo_upload_MBps": mb / osmo["upload_s"], "plain_upload_MBps": mb / plain["upload_s"],
        "upload_ratio": plain["upload_s"] / osmo["upload_s"],
        "osmo_download_MBps": mb / osmo["download_s"], "plain_download_MBps": mb / plain["download_s"],
        "download_ratio": plain["download_s"] / osmo["download_s"],
        "osmo_upload_requests_per_GB": osmo["upload_requests"] / gb,
        "osmo_download_requests_per_GB": osmo["download_requests"] / gb,
        "plain_requests_per_GB_approx": corpus_files(src) / gb,
        "osmo_stored_bytes": osmo["stored_bytes"],
    }


def corpus_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.2, help="corpus size in GB (default 0.2)")
    ap.add_argument("--servers", default="s3,azure")
    ap.add_argument("--concurrency", type=int, default=8, help="osmo's requests in flight")
    ap.add_argument("--work", help="work folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="osmo-remote-bench-"))
    src = work / "corpus"
    if not src.exists():
        corpus.make_v1(src, scale=args.scale, seed=0)
    rows = [run(kind, src, work / kind, args.concurrency) for kind in args.servers.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"corpus: {rows[0]['logical_bytes'] / 1e6:.0f} MB, {corpus_files(src)} files; osmo concurrency "
          f"{args.concurrency}")
    head = ("server", "osmo up MB/s", "plain up MB/s", "ratio", "osmo down MB/s", "plain down MB/s", "ratio",
            "osmo req/GB up", "osmo req/GB down", "plain req/GB")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([r["server"], f"{r['osmo_upload_MBps']:.1f}", f"{r['plain_upload_MBps']:.1f}",
                          f"{r['upload_ratio']:.2f}x", f"{r['osmo_download_MBps']:.1f}",
                          f"{r['plain_download_MBps']:.1f}", f"{r['download_ratio']:.2f}x",
                          f"{r['osmo_upload_requests_per_GB']:.0f}", f"{r['osmo_download_requests_per_GB']:.0f}",
                          f"{r['plain_requests_per_GB_approx']:.0f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
