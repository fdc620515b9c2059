"""The import's S3 folder: list the files directly in it, stream one, write an error report back.

S3 errors are translated at this boundary into MoEngage's fetch messages:
"Given S3 Access Key is not valid" and "Please check the folder path and try again".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from inflow.producers.s3_import.definition import ImportDefinition
from inflow.producers.s3_import.exceptions import FetchError
from inflow.producers.s3_import.naming import name_pattern, object_name, shown

ACCESS_KEY_INVALID = "Given S3 Access Key is not valid"
CHECK_FOLDER = "Please check the folder path and try again"
FILE_NOT_FOUND = "file not found at the location"
FILE_CHANGED = "The file was replaced while it was being imported; upload it again under a new name"
REPORT_FOLDER = "inflow-error-reports"
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}
_CHANGED_CODES = {"PreconditionFailed", "412"}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable", "Throttling"}
# Errors of the connection to S3, not of the file: refused, reset, timed out, cut mid-stream.
_TRANSPORT_ERRORS = (
    EndpointConnectionError,
    ConnectionClosedError,
    HTTPClientError,
    IncompleteReadError,
    ConnectionError,
    TimeoutError,
)


def transient_s3_error(exc: BaseException) -> bool:
    """True when ``exc`` says S3 is unreachable or briefly unable to answer (connection, timeout, 5xx)."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code.startswith("5") or code in _TRANSIENT_CODES or status >= 500
    return isinstance(exc, _TRANSPORT_ERRORS)


@dataclass(frozen=True, slots=True)
class S3File:
    """One candidate file directly in the import's folder."""

    name: str
    key: str
    size: int
    etag: str
    last_modified: datetime


def translate(exc: Exception, missing: str = CHECK_FOLDER) -> FetchError:
    """Map a boto3 error to MoEngage's message, keeping the original as the cause."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _AUTH_CODES:
            return FetchError(ACCESS_KEY_INVALID)
        if code in _MISSING_CODES:
            return FetchError(missing)
        err = FetchError(f"S3 error {code}: {exc}")
        err.retriable = transient_s3_error(exc)
        return err
    err = FetchError(f"cannot reach S3: {exc}")
    err.retriable = transient_s3_error(exc)
    return err


class Folder:
    """S3 access with the import's own credentials; ``default_endpoint`` serves local setups."""

    def __init__(self, definition: ImportDefinition, default_endpoint: str | None = None) -> None:
        self.definition = definition
        self.bucket = definition.bucket
        self.prefix = definition.folder
        self._pattern: re.Pattern[str] = name_pattern(
            definition.prefix, definition.date_format, definition.file_format.value, definition.encrypted
        )
        self._client = boto3.client(
            "s3",
            endpoint_url=definition.endpoint_url or default_endpoint,
            aws_access_key_id=definition.access_key,
            aws_secret_access_key=definition.secret_key.get_secret_value(),
            region_name=definition.region or "us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=10,
                read_timeout=120,
                retries={"max_attempts": 5, "mode": "standard"},
            ),
        )

    def matches(self, name: str) -> bool:
        return self._pattern.match(name) is not None

    def list_files(self) -> list[S3File]:
        """Matching files directly in the folder, oldest first (sub-folders are never looked into)."""
        try:
            found = sorted(self._iter_objects(), key=lambda f: (f.last_modified, f.name))
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc) from exc
        return found

    def _iter_objects(self) -> Iterator[S3File]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "/", Delimiter="/"):
            for obj in page.get("Contents", []):
                name = object_name(obj["Key"], self.prefix)
                if name and self.matches(name):
                    yield S3File(
                        name,
                        obj["Key"],
                        int(obj["Size"]),
                        str(obj.get("ETag", "")).strip('"'),
                        obj["LastModified"],
                    )

    def open(self, file: S3File) -> Any:
        """A streaming body with ``read(n)``; nothing is buffered beyond the HTTP socket's chunks.

        The read is pinned to the version that was listed (``If-Match`` its ETag): every read of one
        import of the file (the signature check and the data) sees the same bytes, and a file replaced
        in between fails with :data:`FILE_CHANGED` instead of importing data that was never checked.
        """
        pin = {"IfMatch": f'"{file.etag}"'} if file.etag else {}
        try:
            return self._client.get_object(Bucket=self.bucket, Key=file.key, **pin)["Body"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _CHANGED_CODES:
                raise FetchError(f"{FILE_CHANGED} (it is no longer ETag {file.etag})") from exc
            raise translate(exc, FILE_NOT_FOUND) from exc
        except BotoCoreError as exc:
            raise translate(exc, FILE_NOT_FOUND) from exc

    def report_key(self, file: S3File) -> str:
        """Error reports go in a sub-folder, which imports never read."""
        return f"{self.prefix}/{REPORT_FOLDER}/{shown(file.name)}.errors.csv"

    def read_report(self, key: str, max_bytes: int) -> bytes:
        """An error report written by :meth:`put_report` (only keys in the report folder; at most
        ``max_bytes``, a longer report is an error saying so)."""
        if not key.startswith(f"{self.prefix}/{REPORT_FOLDER}/") or ".." in key.split("/"):
            raise FetchError(f"{shown(key)} is not an error report of this import")
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            data: bytes = body.read(max_bytes + 1)
        except ClientError as exc:
            raise translate(exc, FILE_NOT_FOUND) from exc
        except BotoCoreError as exc:
            raise translate(exc) from exc
        if len(data) > max_bytes:
            raise FetchError(f"error report {shown(key)} is over {max_bytes} bytes; fetch it from S3")
        return data

    def put_report(self, key: str, body: IO[bytes]) -> None:
        try:
            self._client.upload_fileobj(body, self.bucket, key, ExtraArgs={"ContentType": "text/csv"})
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc) from exc
