"""S3 and S3-compatible servers (AWS, MinIO, Ceph radosgw, moto) through s3fs.

Credentials come from the AWS chain as boto resolves it (environment, shared config and
credentials files, profiles, instance roles) unless the store options name them. The endpoint comes
from the ``endpoint_url`` option, else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``.

Exclusive creates are single-part ``PutObject`` requests with ``If-None-Match: *``. AWS and moto
answer a lost race with 412 PreconditionFailed, which s3fs raises as ``FileExistsError``. Ceph
radosgw answers 412 without the field s3fs looks for, so s3fs raises a bare ``OSError(EINVAL)``;
``refine_create_error`` therefore asks the server whether the key now exists and reports a lost
race in both forms. (The store never creates refs with multipart uploads: radosgw ignores
If-None-Match on CompleteMultipartUpload.)
"""

from __future__ import annotations

import os
from typing import Any

from osmo_store.blob.fsspec_store import FsspecBlobStore, truthy
from osmo_store.errors import AlreadyExistsError, OsmoError, UsageError

OPTIONS = ("endpoint_url", "region", "profile", "key", "secret", "token", "anon", "concurrency")
SINGLE_PUT_LIMIT = 4 << 30  # s3fs switches to multipart above 2 x chunksize; keep every put single


def endpoint_from_env() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3BlobStore(FsspecBlobStore):
    def refine_create_error(self, key: str, error: OsmoError) -> OsmoError:
        try:
            self.size(key)
        except OsmoError:
            return error  # not there (or cannot tell): the create failed for another reason
        return AlreadyExistsError(f"{self.url}: object {key} already exists")


def open_s3(url: str, options: dict[str, Any]) -> S3BlobStore:
    """``s3://bucket[/prefix]`` with store options (see ``OPTIONS``)."""
    unknown = sorted(set(options) - set(OPTIONS) - {"allow_unsafe_create"})
    if unknown:
        raise UsageError(f"store {url}: unknown S3 {'option' if len(unknown) == 1 else 'options'} "
                         f"{', '.join(unknown)} "
                         f"(known: {', '.join(OPTIONS)})")
    root = url[len("s3://"):].strip("/")
    if not root:
        raise UsageError(f"store URL {url!r}: name a bucket, e.g. s3://my-bucket/datasets")
    try:
        import s3fs
    except ImportError:  # pragma: no cover - s3fs is a dependency
        raise UsageError("S3 stores need the s3fs package (pip install s3fs)") from None
    kwargs: dict[str, Any] = {
        "skip_instance_cache": True,
        "use_listings_cache": False,
        # one retry layer only: ours (blob/retry.py)
        "config_kwargs": {"retries": {"total_max_attempts": 1, "mode": "standard"}},
        # one GET per read: above 1, s3fs precedes every whole-object read with a HEAD (and, for a missing
        # key, a LIST too) to decide whether to split it into ranges, which it does only above 50 MiB (packs
        # are 32 MiB by default); osmo reads in parallel itself
        "max_concurrency": 1,
    }
    endpoint = options.get("endpoint_url") or endpoint_from_env()
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if options.get("region"):
        kwargs["client_kwargs"] = {"region_name": options["region"]}
    if options.get("profile"):
        kwargs["profile"] = options["profile"]
    if options.get("key"):
        kwargs["key"] = options["key"]
    if options.get("secret"):
        kwargs["secret"] = options["secret"]
    if options.get("token"):
        kwargs["token"] = options["token"]
    if truthy(options.get("anon", False)):
        kwargs["anon"] = True
    fs = s3fs.S3FileSystem(**kwargs)
    fs.retries = 1
    return S3BlobStore(fs, root, f"s3://{root}", exclusive=True, concurrency=int(options.get("concurrency", 8)),
                       put_options={"chunksize": SINGLE_PUT_LIMIT})
