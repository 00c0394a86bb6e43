"""Shards on object storage: URLs through fsspec, the manifest written last, the loader verifying
each shard's sha256 as it reads, and the storage faults (missing or truncated object, wrong
credentials, endpoint down), against a local S3-compatible server (moto) on 127.0.0.1."""
from __future__ import annotations

import collections
import json
import logging

import pytest
from data_fixtures import make_raw, tiny_config
from s3_fixtures import S3Server, use_env

from datasets import storage
from datasets.shards import build, tar
from datasets.shards.loader import eval_loader, train_loader
from datasets.shards.tar import load_manifest


def test_locations_and_messages(monkeypatch, tmp_path):
    assert not storage.is_url("data/shards/x") and not storage.is_url("file:///tmp/x")
    assert storage.is_url("s3://b/p") and storage.scheme("GS://b") == "gs"
    assert storage.join("s3://b/p/", "m.json") == "s3://b/p/m.json"  # not Path's "s3:/b/p"
    assert storage.join("file:///tmp/x", "m.json") == "/tmp/x/m.json"
    assert storage.safe_url("s3://key:secret@b/p") == "s3://b/p"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    assert storage.scrub("denied for s3cr3t-value") == "denied for ***"
    with pytest.raises(storage.StorageError, match="read-only"):
        storage.write_bytes("https://example.invalid/x", b"")
    (tmp_path / "f").write_bytes(b"abc")
    with pytest.raises(storage.ChecksumError, match="does not match"):
        storage.read_verified(tmp_path / "f", "0" * 64, 3)
    with pytest.raises(storage.ChecksumError, match="3 bytes, the manifest says 4"):
        storage.read_verified(tmp_path / "f", None, 4)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3raw")
    return make_raw(root / "raw", "fasion", train_ids=5, test_ids=2, views=3)


def _pairs(loader) -> collections.Counter:
    seen: collections.Counter = collections.Counter()
    for batch in loader:
        seen.update(zip(batch["source_name"], batch["target_name"]))
    return seen


def test_preprocess_to_a_bucket_equals_local_and_the_loader_streams_it(s3, raw, monkeypatch, tmp_path):
    """The quick round trip: the same bytes as a local run, the manifest last, the same epoch."""
    use_env(monkeypatch, s3)
    url = s3.make_bucket("roundtrip") + "/shards/r"
    cfg = tiny_config(shard_size=2)
    local = build.preprocess("r", raw.spec(), cfg, tmp_path / "local", None, None, False)
    remote = build.preprocess("r", raw.spec(), cfg, url, None, None, False)
    assert remote == local
    for name in [s["name"] for s in local["shards"]] + ["manifest.json", "rejects.csv"]:
        assert storage.read_bytes(storage.join(url, name)) == (tmp_path / "local" / name).read_bytes(), name
    assert load_manifest(url) == local
    want = _pairs(train_loader(tmp_path / "local", rank=0, world_size=1, batch_size=4, num_workers=0,
                               augment=None))
    got = _pairs(train_loader(url, rank=0, world_size=1, batch_size=4, num_workers=0, augment=None))
    assert got == want and sum(got.values()) > 0
    test = list(eval_loader(url, batch_size=2))
    assert sum(len(b["pair_index"]) for b in test) == local["splits"]["test"]["pairs_written"]


def _bucket_copy(s3, raw, name: str) -> tuple[str, dict]:
    url = s3.make_bucket(name) + "/shards"
    return url, build.preprocess("f", raw.spec(), tiny_config(shard_size=1), url, None, None, False)


@pytest.mark.faults
def test_missing_and_truncated_objects_are_counted_data_errors(s3, raw, monkeypatch, caplog):
    use_env(monkeypatch, s3)
    url, manifest = _bucket_copy(s3, raw, "faulty")
    train = [s["name"] for s in manifest["shards"] if s["split"] == "train"]
    storage.remove(storage.join(url, train[0]))
    cut = storage.read_bytes(storage.join(url, train[2]))
    storage.write_bytes(storage.join(url, train[2]), cut[: len(cut) // 2])
    clean = train_loader(url, rank=0, world_size=1, batch_size=3, num_workers=0, augment=None)
    n = len(clean)
    caplog.set_level(logging.WARNING, "attnflow.data")
    loader = train_loader(url, rank=0, world_size=1, batch_size=3, num_workers=2, augment=None)
    batches = sum(1 for _ in loader)
    assert batches == n  # bad shards never change the batch count
    assert loader.skipped == 2 and loader.substituted > 0
    text = " ".join(loader.recent_errors)
    assert f"{train[0]}" in text and "not found" in text
    assert f"{train[2]}" in text and "manifest says" in text


@pytest.mark.faults
def test_a_replaced_object_fails_its_sha256(s3, raw, monkeypatch):
    use_env(monkeypatch, s3)
    url, manifest = _bucket_copy(s3, raw, "replaced")
    a, b = [s["name"] for s in manifest["shards"] if s["split"] == "train"][:2]
    sizes = {s["name"]: s["bytes"] for s in manifest["shards"]}
    other = storage.read_bytes(storage.join(url, b))
    if len(other) == sizes[a]:  # a same-size, different-content object: only the hash can tell
        storage.write_bytes(storage.join(url, a), other)
        loader = train_loader(url, rank=0, world_size=1, batch_size=3, num_workers=0, augment=None)
        list(loader)
        assert loader.skipped == 1 and "sha256" in loader.recent_errors[0]
    with pytest.raises(storage.ChecksumError, match="sha256"):
        tar.read_shard(url, {"name": b, "sha256": "1" * 64, "bytes": len(other)})


@pytest.mark.faults
def test_wrong_credentials_give_a_clear_error_without_the_secret(tmp_path, raw, monkeypatch):
    # moto checks signatures only once IAM auth is on: the first actions (creating the user and
    # key this test then uses correctly) run unauthenticated.
    with S3Server(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}, log=tmp_path / "moto.log") as server:
        import boto3

        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        iam.create_user(UserName="ci")
        key = iam.create_access_key(UserName="ci")["AccessKey"]
        iam.put_user_policy(UserName="ci", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        use_env(monkeypatch, server)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        boto3.client("s3", endpoint_url=server.url, region_name="us-east-1").create_bucket(Bucket="locked")
        url = "s3://locked/shards"
        build.preprocess("c", raw.spec(), tiny_config(), url, None, None, False)
        assert load_manifest(url)["dataset"] == "c"
        secret = "wrong-secret-0123456789"
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        storage._fs(url)[0].clear_instance_cache()
        with pytest.raises(storage.StorageError) as err:
            load_manifest(url)
        message = str(err.value)
        assert "s3://locked/shards/manifest.json" in message and "refused" in message
        assert secret not in message and key["SecretAccessKey"] not in message


@pytest.mark.faults
def test_endpoint_down_mid_read_retries_then_fails_clearly(raw, monkeypatch, tmp_path):
    server = S3Server(log=tmp_path / "moto.log").start()
    try:
        use_env(monkeypatch, server)
        url, manifest = _bucket_copy(server, raw, "flaky")
        loader = train_loader(url, rank=0, world_size=1, batch_size=2, num_workers=0, augment=None)
        it = iter(loader)
        next(it)  # streaming has begun
        server.stop()
        with pytest.raises(storage.StorageError, match=r"s3://flaky/shards/.*read failed"):
            for _ in it:
                pass
    finally:
        server.stop()


@pytest.mark.faults
def test_endpoint_down_mid_write_publishes_nothing(raw, monkeypatch, tmp_path):
    """The server dies after some shards went up: no manifest exists, so nothing lists them; a
    rerun against a live server writes the complete dataset."""
    server = S3Server(log=tmp_path / "moto.log").start()
    try:
        use_env(monkeypatch, server)
        url = server.make_bucket("halfway") + "/shards"
        real = storage.write_bytes
        count = [0]

        def dying(location, data):
            real(location, data)
            count[0] += 1
            if count[0] == 3:
                server.stop()

        monkeypatch.setattr(storage, "write_bytes", dying)
        with pytest.raises(storage.StorageError, match="s3://halfway/shards/"):
            build.preprocess("h", raw.spec(), tiny_config(shard_size=1), url, None, None, False)
        monkeypatch.setattr(storage, "write_bytes", real)
        server.start()  # a fresh, empty server: what the first run left is gone with it
        use_env(monkeypatch, server)
        server.make_bucket("halfway")
        storage.write_bytes(storage.join(url, "train-000000.tar"), b"left over")
        with pytest.raises(FileNotFoundError):
            load_manifest(url)
        manifest = build.preprocess("h", raw.spec(), tiny_config(shard_size=1), url, None, None, False)
        assert load_manifest(url) == manifest
        listed = {s["name"] for s in manifest["shards"]}
        names = set(storage.list_names(url))
        assert names == listed | {"manifest.json", "rejects.csv"}
    finally:
        server.stop()
