"""S3 import throughput and memory against a bare read of the same object and a raw producer.

    .venv/bin/python -m bench.s3_import_bench [--rows 1000000] [--pgp-mb 200] \
        [--write /tmp/s3-import-bench.md]

A 1,000,000-row events CSV (about 100 MB) is uploaded to the S3 server (``S3_ENDPOINT_URL``, else a local
SeaweedFS started for the run) and imported by one poller process into Kafka (``KAFKA_BOOTSTRAP_SERVERS``,
default 127.0.0.1:9092; topics get a fresh prefix, deleted afterwards). Each phase runs in its own process
so its peak memory (ru_maxrss) is its own:

* ``read``: a bare streamed read of the same object (boto3, 1 MB chunks) and a count of its lines;
* ``raw``: one confluent-kafka producer (same settings) sending the import's own encoded records, acked;
* ``import``: the real import path (S3 stream, CSV, mapping, Avro, produce, flush), rows/s and peak RSS;
* ``import-pgp``: the same import of a ``--pgp-mb`` MB file encrypted (binary) with GnuPG.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from inflow.config.settings import KafkaSettings, LocalKafkaSettings, LocalS3Settings, S3Settings
from inflow.config.topics import create_topics, load_catalogue
from inflow.kafka.clients import new_admin, new_producer
from inflow.local.process import free_port, port_open
from inflow.local.s3 import boto3_client

HEADER = "user_id,event_time,amount,currency,product_id,category,quantity,coupon,store_id,platform\n"
MAPPINGS = [
    {"column": "user_id", "moe_attr": "uid"},
    {
        "column": "event_time",
        "moe_attr": "event_time",
        "type": "datetime",
        "datetime_format": "YYYY-MM-DDThh:mm:ssTZD",
    },
    {"column": "amount", "moe_attr": "amount", "type": "double"},
    {"column": "currency", "moe_attr": "currency"},
    {"column": "product_id", "moe_attr": "product_id"},
    {"column": "category", "moe_attr": "category"},
    {"column": "quantity", "moe_attr": "quantity", "type": "double"},
    {"column": "coupon", "moe_attr": "coupon"},
    {"column": "store_id", "moe_attr": "store_id"},
    {"column": "platform", "moe_attr": "platform"},
]
CATEGORIES = ["electronics", "fashion", "grocery", "home-and-kitchen", "sports", "books"]


def write_csv(path: Path, rows: int, seed: int = 7) -> int:
    """About 100 bytes per row of realistic purchase events."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        chunk = []
        for i in range(rows):
            chunk.append(
                f"user-{rng.randrange(2_000_000):07d}@example.com,2024-01-{1 + i % 28:02d}T{i % 24:02d}:"
                f"{i % 60:02d}:{(i * 7) % 60:02d}Z,{rng.randrange(100, 99_999) / 100},INR,"
                f"SKU-{rng.randrange(10**8):08d},{rng.choice(CATEGORIES)},{1 + i % 5},SAVE{i % 50},"
                f"store-{i % 997:04d},ANDROID\n"
            )
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return path.stat().st_size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def definition(ctx: dict[str, Any], encrypted: bool) -> Any:
    from inflow.producers.s3_import.definition import parse_definition

    data = {
        "name": f"bench-{ctx['prefix']}",
        "workspace_id": "BENCH",
        "type": "events",
        "event_name": "Purchase",
        "bucket": ctx["bucket"],
        "folder": "bench",
        "access_key": ctx["access_key"],
        "secret_key": ctx["secret_key"],
        "endpoint_url": ctx["endpoint"],
        "date_format": "yyyymmdd",
        "mappings": MAPPINGS,
        "encrypted": encrypted,
    }
    if encrypted:
        data["pgp"] = {"decryption_key": ctx["private_key"], "passphrase": ctx["passphrase"]}
    return parse_definition(data)


def phase_read(ctx: dict[str, Any]) -> dict[str, Any]:
    s3 = boto3_client(
        S3Settings(access_key_id=ctx["access_key"], secret_access_key=SecretStr(ctx["secret_key"])),
        ctx["endpoint"],
    )
    start = time.perf_counter()
    body = s3.get_object(Bucket=ctx["bucket"], Key=ctx["key"])["Body"]
    size = lines = 0
    while chunk := body.read(1 << 20):
        size += len(chunk)
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes": size, "rows": lines - 1, "rows_per_s": (lines - 1) / seconds}


def phase_raw(ctx: dict[str, Any]) -> dict[str, Any]:
    """The import's own records (encoded from the first 20,000 rows), sent ``rows`` times in a cycle."""
    from inflow.producers.s3_import.mapping import compile_mapping
    from inflow.producers.s3_import.records import RecordBuilder
    from inflow.schemas.serde import AvroSerde

    kafka = KafkaSettings(topic_prefix=ctx["prefix"])
    d = definition(ctx, False)
    mapping = compile_mapping(HEADER.strip().split(","), d.mappings, UTC, d.tz)
    builder = RecordBuilder(d, "bench", "file.csv", "run", datetime.now(UTC))
    encode = AvroSerde().encoder("EventRecord")
    sample = []
    with open(ctx["local_csv"], encoding="utf-8") as handle:
        handle.readline()
        for n, line in enumerate(handle, 1):
            key, record = builder.build(n, *mapping.convert(line.rstrip("\n").split(",")))
            sample.append((key, encode(record)))
            if n == 20_000:
                break
    producer = new_producer(kafka)
    topic = kafka.topic("ingest.records")
    rows = ctx["rows"]
    start = time.perf_counter()
    for i in range(rows):
        key, value = sample[i % len(sample)]
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "rows_per_s": rows / seconds}


def phase_import(ctx: dict[str, Any], encrypted: bool) -> dict[str, Any]:
    from inflow.producers.s3_import.importer import FileImport, ImportContext, row_producer
    from inflow.producers.s3_import.runs import RunRecord
    from inflow.producers.s3_import.storage import Folder
    from inflow.schemas.serde import AvroSerde

    kafka = KafkaSettings(topic_prefix=ctx["prefix"])
    d = definition(ctx, encrypted)
    folder = Folder(d)
    (file,) = [f for f in folder.list_files() if f.key == ctx["key"]]
    out = row_producer(kafka)
    run = RunRecord(str(uuid.uuid4()), d.name, "bench", file.name, file.size, datetime.now(UTC))
    start = time.perf_counter()
    result = FileImport(d, folder, file, run, out, AvroSerde(), ImportContext()).run()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows": result.rows_added,
        "bytes": file.size,
        "status": result.status,
        "message": result.message,
        "rows_per_s": result.rows_added / seconds,
        "mb_per_s": file.size / seconds / 1e6,
    }


def child(phase: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in a fresh interpreter and return its figures with its own peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.s3_import_bench", "--phase", phase],
        input=json.dumps(ctx),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gpg_key(home: Path, passphrase: str) -> tuple[str, str]:
    """A fresh RSA-2048 key pair (MoEngage's PGP guide warns that 4096-bit keys fail); returns (private,
    fpr)."""
    base = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        passphrase,
    ]
    subprocess.run(
        [*base, "--quick-gen-key", "bench <bench@inflow>", "rsa2048", "default", "never"],
        check=True,
        capture_output=True,
    )
    colons = subprocess.run(
        [*base, "--with-colons", "--list-secret-keys"], check=True, capture_output=True, text=True
    ).stdout
    fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr"))
    subprocess.run(
        [*base, "--quick-add-key", fpr, "rsa2048", "encr", "never"], check=True, capture_output=True
    )
    private = subprocess.run(
        [*base, "--armor", "--export-secret-keys", fpr], check=True, capture_output=True, text=True
    ).stdout
    return private, fpr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pgp-mb", type=int, default=200, help="size of the encrypted file; 0 skips it")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        ctx = json.loads(sys.stdin.read())
        fn = {
            "read": phase_read,
            "raw": phase_raw,
            "import": lambda c: phase_import(c, False),
            "import-pgp": lambda c: phase_import(c, True),
        }[args.phase]
        result = fn(ctx)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="s3bench-"))
    broker = None
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        if port_open(9092):
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:9092"
        else:  # no broker: start the local one, as `inflow kafka start` does, on free ports
            from inflow.local.kafka import LocalKafka

            cache = Path(os.environ.get("INFLOW_CACHE_DIR", Path.home() / ".cache" / "inflow"))
            broker = LocalKafka(
                work / "kafka", cache, LocalKafkaSettings(port=free_port(), controller_port=free_port())
            )
            broker.start()
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    try:
        run_with_broker(args, work)
    finally:
        if broker is not None:
            broker.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def run_with_broker(args: argparse.Namespace, work: Path) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(topic_prefix=prefix)
    admin = new_admin(kafka)
    create_topics(admin, load_catalogue(prefix))
    local = None
    if os.environ.get("S3_ENDPOINT_URL"):
        s3s = S3Settings()
    else:
        from inflow.local.s3 import LocalS3

        s3s = S3Settings(access_key_id="bench", secret_access_key=SecretStr("bench-secret-key"))
        local = LocalS3(work / "home", s3s, LocalS3Settings(port=free_port()))
        s3s = s3s.model_copy(update={"endpoint_url": local.start()})
    try:
        results = measure(args, prefix, s3s, work)
    finally:
        if local is not None:
            local.stop()
        admin.delete_topics([s.name for s in load_catalogue(prefix)], operation_timeout=30)
    report = render(args, results)
    print(report)
    if args.write:
        args.write.write_text(report)


def measure(args: argparse.Namespace, prefix: str, s3s: S3Settings, work: Path) -> dict[str, Any]:
    s3 = boto3_client(s3s, str(s3s.endpoint_url))
    bucket = f"bench-{prefix}"
    s3.create_bucket(Bucket=bucket)
    csv_path = work / "Purchase_20240101.csv"
    size = write_csv(csv_path, args.rows)
    s3.upload_file(str(csv_path), bucket, "bench/Purchase_20240101.csv")
    ctx = {
        "prefix": prefix,
        "bucket": bucket,
        "endpoint": s3s.endpoint_url,
        "access_key": s3s.access_key_id,
        "secret_key": s3s.secret_access_key.get_secret_value(),
        "key": "bench/Purchase_20240101.csv",
        "local_csv": str(csv_path),
        "rows": args.rows,
    }
    results: dict[str, Any] = {"csv_bytes": size}
    results["read"] = child("read", ctx)
    results["raw"] = child("raw", ctx)
    results["import"] = child("import", ctx)
    if args.pgp_mb:
        rows = int(args.rows * args.pgp_mb * 1e6 / size)
        big = work / "Purchase_20240102.csv"
        write_csv(big, rows, seed=11)
        csv_path.unlink()
        home = work / "gnupg"
        home.mkdir(mode=0o700)
        passphrase = "bench passphrase"
        private, fpr = gpg_key(home, passphrase)
        enc = work / "Purchase_20240102.csv.pgp"
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(home),
                "--batch",
                "--trust-model",
                "always",
                "--compress-algo",
                "none",
                "--output",
                str(enc),
                "--encrypt",
                "-r",
                fpr,
                str(big),
            ],
            check=True,
        )
        big.unlink()
        s3.upload_file(str(enc), bucket, "bench/Purchase_20240102.csv.pgp")
        results["pgp_bytes"] = enc.stat().st_size
        enc.unlink()
        results["import-pgp"] = child(
            "import-pgp",
            ctx
            | {"key": "bench/Purchase_20240102.csv.pgp", "private_key": private, "passphrase": passphrase},
        )
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    return results


def row(label: str, p: dict[str, Any]) -> str:
    """One Markdown table row of a phase's figures."""
    mb = f"{p['bytes'] / 1e6:.0f}" if "bytes" in p else "-"
    mb_s = f"{p['bytes'] / p['seconds'] / 1e6:.1f}" if "bytes" in p else "-"
    return (
        f"| {label} | {p['rows']:,} | {mb} | {p['seconds']:.1f} | {p['rows_per_s']:,.0f} | {mb_s} "
        f"| {p['peak_rss_mb']:.0f} |"
    )


def render(args: argparse.Namespace, r: dict[str, Any]) -> str:
    imp, raw, read = r["import"], r["raw"], r["read"]
    lines = [
        "# S3 import benchmark",
        "",
        f"Command: `.venv/bin/python -m bench.s3_import_bench --rows {args.rows} --pgp-mb {args.pgp_mb}`",
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; broker and S3 "
        f"server on the same machine. {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "| phase | rows | MB | seconds | rows/s | MB/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        row("bare S3 read of the object", read),
        row("raw producer, same records", raw),
        row("**import** (CSV, events)", imp),
    ]
    if "import-pgp" in r:
        lines.append(row("**import, PGP-encrypted** (GnuPG stream)", r["import-pgp"]))
    lines += [
        "",
        f"Ratios (rows/s): import / raw producer = {imp['rows_per_s'] / raw['rows_per_s']:.2f}; "
        f"import / bare read = {imp['rows_per_s'] / read['rows_per_s']:.3f}. Import status: {imp['status']}.",
        "Targets: >= 100,000 rows/s per poller process; peak memory <= 300 MB (both files).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
