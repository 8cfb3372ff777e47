"""Publish a job's files to S3 or an S3-compatible store (MinIO, Backblaze B2).

Each file becomes one object named by `key_template`. A file larger than one part
is streamed from disk as a multipart upload, one part in memory at a time, and the
upload is aborted if any step fails; a smaller file goes up in a single PUT. An
object counts as published only once HEAD reports the file's size, and publishing
a job again overwrites the same keys. Errors, sorted as `daemon.deliver.errors`:

    Retryable   s3_SlowDown, s3_InternalError, ... (throttling, 408, 429, 5xx),
                s3_connection (refused, reset, timed out), s3_incomplete
    Permanent   s3_NoSuchBucket, s3_AccessDenied, s3_InvalidAccessKeyId,
                s3_SignatureDoesNotMatch and other 4xx, s3_tls, s3_credentials,
                s3_client (bad configuration), local_file (unreadable or changed)
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import time
from typing import IO, Any

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from botocore import exceptions as boto  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from daemon import limits
from daemon.config import S3Settings
from daemon.deliver.errors import DeliveryError, Permanent, Retryable
from daemon.deliver.publish import LocalFile, PublishRequest

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"  # custom stores ignore it, but SigV4 signs with one
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60  # per socket read, so slow links still finish large parts
MAX_ATTEMPTS = 3  # botocore's own tries; the delivery queue retries after that
MAX_PARTS = 10_000  # S3's limit; parts grow beyond part_size_bytes to stay under
_THROTTLED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests"}
    | {"RequestTimeout", "InternalError", "ServiceUnavailable"}
)
_HINTS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access denied: check the key's permissions on the bucket",
    "InvalidAccessKeyId": "the store does not know this access key id",
    "SignatureDoesNotMatch": "the secret access key does not match the key id",
}
_CLIENT_ERRORS = (boto.BotoCoreError, boto.ClientError, aiohttp.ClientError, OSError)
_NETWORK = (boto.ConnectionError, boto.HTTPClientError, aiohttp.ClientError, OSError)
_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2"}


class S3Publisher:
    """Copies every file of a job into one bucket; one instance serves all jobs."""

    def __init__(self, settings: S3Settings) -> None:
        if not settings.bucket:
            raise ValueError("s3.bucket is not set")
        self._settings = settings
        self._bucket = settings.bucket
        self._endpoint = settings.endpoint_url or "aws"
        self._session = aioboto3.Session()
        crc = settings.checksum == "when_supported"
        self._checksum = {"ChecksumAlgorithm": "CRC32"} if crc else {}

    def __repr__(self) -> str:
        return f"S3Publisher(bucket={self._bucket!r}, endpoint={self._endpoint!r})"

    async def __call__(self, request: PublishRequest) -> dict[str, Any]:
        prefix, fmt = self._settings.prefix, self._settings.key_template.format
        keys = [prefix + fmt(job_id=request.job_id, name=f.name) for f in request.files]
        where = f"s3://{self._bucket}"
        try:
            async with self._client() as client:
                for file, key in zip(request.files, keys, strict=True):
                    where = f"s3://{self._bucket}/{key}"
                    await self._publish_file(client, file, key)
        except _CLIENT_ERRORS as exc:
            raise _classify(exc, where, self._endpoint) from None
        return {"bucket": self._bucket, "keys": keys, "endpoint": self._endpoint}

    def _client(self) -> Any:
        settings = self._settings
        options: dict[str, Any] = {"config": _client_config(settings)}
        if settings.endpoint_url:
            options["endpoint_url"] = settings.endpoint_url
            options["region_name"] = settings.region or DEFAULT_REGION
        elif settings.region:
            options["region_name"] = settings.region
        if settings.access_key_id and settings.secret_access_key:
            options["aws_access_key_id"] = settings.access_key_id.reveal()
            options["aws_secret_access_key"] = settings.secret_access_key.reveal()
        return self._session.client("s3", **options)

    async def _publish_file(self, client: Any, file: LocalFile, key: str) -> None:
        started = time.monotonic()
        url = f"s3://{self._bucket}/{key}"
        target: dict[str, Any] = {"Bucket": self._bucket, "Key": key}
        target["ContentType"] = content_type(file.name)
        target["Metadata"] = {"sha256": file.sha256}
        part_size = max(self._settings.part_size_bytes, -(-file.size // MAX_PARTS))
        with _open(file) as handle:
            if file.size > part_size:
                parts = await self._multipart(client, handle, file, part_size, target)
            else:
                body = await _read(handle, file, part_size + 1)
                _check_length(file, len(body))
                await client.put_object(**target, Body=body)
                parts = 1

        head = await client.head_object(Bucket=self._bucket, Key=key)
        if head["ContentLength"] != file.size:
            stored = f"holds {head['ContentLength']} bytes, expected {file.size}"
            raise Retryable("s3_incomplete", f"{url} {stored}")
        took = time.monotonic() - started
        log.info("s3 put %s: %d bytes, parts=%d, %.2f s", url, file.size, parts, took)

    async def _multipart(
        self,
        client: Any,
        handle: IO[bytes],
        file: LocalFile,
        part_size: int,
        fields: dict[str, Any],
    ) -> int:
        await _abort_leftovers(client, self._bucket, fields["Key"])
        upload = await client.create_multipart_upload(**fields, **self._checksum)
        where = {"Bucket": self._bucket, "Key": fields["Key"]}
        where["UploadId"] = upload["UploadId"]
        parts: dict[int, dict[str, Any]] = {}
        # A few parts travel at once (as boto3's own transfers do); memory stays
        # bounded by S3_PARTS_IN_FLIGHT parts, whatever the file's size.
        window = asyncio.Semaphore(limits.S3_PARTS_IN_FLIGHT)

        async def send(number: int, chunk: bytes) -> None:
            try:
                reply = await client.upload_part(
                    **where, PartNumber=number, Body=chunk, **self._checksum
                )
            finally:
                window.release()
            part = {"PartNumber": number, "ETag": reply["ETag"]}
            if "ChecksumCRC32" in reply:
                part["ChecksumCRC32"] = reply["ChecksumCRC32"]
            parts[number] = part

        try:
            sent = number = 0
            async with asyncio.TaskGroup() as group:
                while True:
                    await window.acquire()
                    chunk = await _read(handle, file, part_size)
                    if not chunk:
                        window.release()
                        break
                    sent += len(chunk)
                    number += 1
                    group.create_task(send(number, chunk))
                    del chunk  # the task holds the part until it is sent
            _check_length(file, sent)
            ordered = [parts[number] for number in sorted(parts)]
            await client.complete_multipart_upload(
                **where, MultipartUpload={"Parts": ordered}
            )
        except BaseExceptionGroup as grouped:
            await _abort(client, where)
            raise grouped.exceptions[0] from None
        except BaseException:
            await _abort(client, where)
            raise
        return len(parts)


def content_type(name: str) -> str:
    """The MIME type for a file name; compressed archives keep their compression."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return guessed or "application/octet-stream"


def _client_config(settings: S3Settings) -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        # Custom stores (MinIO, B2) often serve no per-bucket host names.
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
        request_checksum_calculation=settings.checksum,
        response_checksum_validation=settings.checksum,
    )


def _open(file: LocalFile) -> IO[bytes]:
    try:
        return file.path.open("rb")
    except OSError as exc:
        raise Permanent(
            "local_file", f"cannot open {file.name}: {exc.strerror}"
        ) from None


async def _read(handle: IO[bytes], file: LocalFile, size: int) -> bytes:
    try:
        return await asyncio.to_thread(handle.read, size)
    except OSError as exc:
        raise Permanent(
            "local_file", f"cannot read {file.name}: {exc.strerror}"
        ) from None


def _check_length(file: LocalFile, length: int) -> None:
    if length != file.size:
        raise Permanent(
            "local_file", f"{file.name} has {length} bytes, recorded as {file.size}"
        )


async def _abort_leftovers(client: Any, bucket: str, key: str) -> None:
    """Abort unfinished uploads of this key: a killed attempt leaves its parts."""
    listing = await client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    for upload in listing.get("Uploads", []):
        if upload.get("Key") == key:
            where = {"Bucket": bucket, "Key": key, "UploadId": upload["UploadId"]}
            await _abort(client, where)


async def _abort(client: Any, where: dict[str, str]) -> None:
    try:
        await client.abort_multipart_upload(**where)
    except _CLIENT_ERRORS:
        # The parts stay billed until a lifecycle rule removes incomplete uploads.
        log.warning("s3 abort of %s/%s failed", where["Bucket"], where["Key"])


def _classify(exc: BaseException, where: str, endpoint: str) -> DeliveryError:
    """Sort a client failure; messages name the object, never a credential."""
    if isinstance(exc, boto.ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        message = (
            f"{where} at {endpoint}: {_HINTS.get(code, code)} "
            f"(HTTP {status} on {exc.operation_name})"
        )
        if code in _THROTTLED or status in (408, 429) or status >= 500:
            return Retryable(f"s3_{code}", message)
        return Permanent(f"s3_{code}", message)
    name = type(exc).__name__
    if isinstance(exc, boto.SSLError):
        return Permanent("s3_tls", f"TLS with {endpoint} failed ({name})")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return Permanent("s3_credentials", f"no usable S3 credentials ({name})")
    if isinstance(exc, _NETWORK):  # refused, reset, timed out
        return Retryable("s3_connection", f"S3 at {endpoint} unreachable ({name})")
    return Permanent("s3_client", f"S3 client for {endpoint} failed ({name})")
