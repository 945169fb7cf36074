"""Tests for consensus/cifar10.py on small archives in the official binary layout."""
from __future__ import annotations

import hashlib
import http.server
import threading
import warnings
from pathlib import Path

import pytest
import torch

from consensus.cifar10 import (ARCHIVE_NAME, Cifar10, DatasetError, decode_records,
                               download_archive, load_cifar10)
from tests.cifar_fixture import (TEST_NAME, TRAIN_NAMES, cifar_members, encode_records,
                                 make_cifar_archive, write_tar_gz)

N = 20  # records per batch in the small archives


def member_bytes(seed: int = 0) -> dict[str, bytes]:
    return {name: encode_records(recs) for name, recs in cifar_members(N, seed).items()}


def load(root: Path, md5: str, **kw) -> Cifar10:
    return load_cifar10(root, download=False, md5=md5, records_per_batch=N, **kw)


def reencode(x: torch.Tensor, y: torch.Tensor) -> bytes:
    return b"".join(bytes([int(y[i])]) + bytes(x[i].flatten().tolist()) for i in range(len(y)))


# -- decoding -----------------------------------------------------------------
def test_decode_records_layout():
    recs = cifar_members(3, seed=1)[TEST_NAME]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.frombuffer on read-only bytes
        x, y = decode_records(encode_records(recs), 3)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (3,) and y.dtype == torch.uint8
    for i, (label, pixels) in enumerate(recs):
        assert int(y[i]) == label
        for c, row, col in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 17, 5)]:
            assert int(x[i, c, row, col]) == pixels[c * 1024 + row * 32 + col]


def test_decode_records_rejects_bad_input():
    good = encode_records(cifar_members(2, seed=2)[TEST_NAME])
    with pytest.raises(DatasetError, match="whole number of 3073-byte records"):
        decode_records(good[:-1], None)
    with pytest.raises(DatasetError, match="2 records, expected 3"):
        decode_records(good, 3)
    bad = bytearray(good)
    bad[3073] = 10  # label of record 1
    with pytest.raises(DatasetError, match="record 1 has label 10"):
        decode_records(bytes(bad), 2)
    x, y = decode_records(b"", 0)
    assert x.shape == (0, 3, 32, 32) and y.shape == (0,)


# -- loading ------------------------------------------------------------------
def test_load_round_trips_in_official_order(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N, seed=0)
    ds = load(tmp_path, md5)
    assert ds.train_x.shape == (5 * N, 3, 32, 32) and ds.train_y.shape == (5 * N,)
    assert ds.test_x.shape == (N, 3, 32, 32) and ds.test_y.shape == (N,)
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        assert t.dtype == torch.uint8 and t.is_contiguous()
    members = member_bytes(seed=0)
    assert reencode(ds.train_x, ds.train_y) == b"".join(members[n] for n in TRAIN_NAMES)
    assert reencode(ds.test_x, ds.test_y) == members[TEST_NAME]
    # Each batch lands in its own slice, batch 1 first.
    for b, name in enumerate(TRAIN_NAMES):
        sl = slice(b * N, (b + 1) * N)
        assert reencode(ds.train_x[sl], ds.train_y[sl]) == members[name]


def test_load_is_deterministic(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N, seed=3)
    a, b = load(tmp_path, md5), load(tmp_path, md5)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_missing_file_without_download(tmp_path):
    with pytest.raises(DatasetError, match="not found and download=False"):
        load(tmp_path, "0" * 32)


def test_wrong_checksum_without_download(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N)
    with pytest.raises(DatasetError, match=f"expected MD5 {'0' * 32}, got {md5}"):
        load(tmp_path, "0" * 32)


def corrupt_archive(tmp_path: Path, edit) -> str:
    files = member_bytes()
    edit(files)
    return write_tar_gz(tmp_path / ARCHIVE_NAME, files)


def test_truncated_member(tmp_path):
    def edit(f):
        f[TRAIN_NAMES[2]] = f[TRAIN_NAMES[2]][:-100]
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match=rf"data_batch_3.bin has {N * 3073 - 100} bytes, "
                                           rf"expected {N * 3073}"):
        load(tmp_path, md5)


def test_member_with_one_record_too_many(tmp_path):
    def edit(f):
        f[TEST_NAME] += f[TEST_NAME][:3073]
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="test_batch.bin has"):
        load(tmp_path, md5)


def test_label_out_of_range(tmp_path):
    def edit(f):
        bad = bytearray(f[TRAIN_NAMES[4]])
        bad[7 * 3073] = 10
        f[TRAIN_NAMES[4]] = bytes(bad)
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="data_batch_5.bin: record 7 has label 10"):
        load(tmp_path, md5)


def test_missing_member(tmp_path):
    md5 = corrupt_archive(tmp_path, lambda f: f.pop(TRAIN_NAMES[1]))
    with pytest.raises(DatasetError, match="missing member.*data_batch_2.bin"):
        load(tmp_path, md5)


def test_misnamed_member_is_missing(tmp_path):
    def edit(f):
        f["cifar-10-batches-py/test_batch.bin"] = f.pop(TEST_NAME)
    md5 = corrupt_archive(tmp_path, edit)
    with pytest.raises(DatasetError, match="missing member.*test_batch.bin"):
        load(tmp_path, md5)


def test_wrong_records_per_batch(tmp_path):
    md5 = make_cifar_archive(tmp_path / ARCHIVE_NAME, records_per_batch=N)
    with pytest.raises(DatasetError, match="expected 30730000"):
        load_cifar10(tmp_path, download=False, md5=md5)  # official size: 10000 records


def test_truncated_archive(tmp_path):
    path = tmp_path / ARCHIVE_NAME
    make_cifar_archive(path, records_per_batch=N)
    path.write_bytes(path.read_bytes()[:-2000])
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="not a readable tar.gz"):
        load(tmp_path, md5)


def test_not_a_tar_gz(tmp_path):
    path = tmp_path / ARCHIVE_NAME
    path.write_bytes(b"<html>not found</html>")
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DatasetError, match="not a readable tar.gz"):
        load(tmp_path, md5)


# -- download over a real HTTP server -----------------------------------------
class Server:
    """http.server on 127.0.0.1 serving one body at /archive, counting hits."""

    def __init__(self, body: bytes):
        self.body = body
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits += 1
                if self.path == "/archive":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body)
                elif self.path == "/no-length":  # HTTP/1.0: body ends at close
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(server.body)
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/archive") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    src = tmp_path / "src" / ARCHIVE_NAME
    src.parent.mkdir()
    md5 = make_cifar_archive(src, records_per_batch=N)
    server = Server(src.read_bytes())
    yield server, md5
    server.close()


def test_download_progress_and_no_second_download(tmp_path, served, capfd):
    server, md5 = served
    root = tmp_path / "data"
    path = download_archive(root, server.url(), md5)
    assert path == root / ARCHIVE_NAME
    assert path.read_bytes() == server.body
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_NAME]
    assert server.hits == 1
    err = capfd.readouterr().err
    assert err.startswith("\r") and err.endswith("\n")
    assert "100.0%" in err and "MB/s" in err and ARCHIVE_NAME in err

    assert download_archive(root, server.url(), md5) == path
    assert server.hits == 1
    assert capfd.readouterr().err == ""


def test_download_quiet(tmp_path, served, capfd):
    server, md5 = served
    download_archive(tmp_path, server.url(), md5, progress=False)
    assert capfd.readouterr().err == ""


def test_download_without_content_length(tmp_path, served, capfd):
    server, md5 = served
    path = download_archive(tmp_path, server.url("/no-length"), md5)
    assert path.read_bytes() == server.body
    assert "MB/s" in capfd.readouterr().err


def test_download_wrong_md5_leaves_nothing(tmp_path, served):
    server, md5 = served
    with pytest.raises(DatasetError) as e:
        download_archive(tmp_path, server.url(), "f" * 32)
    assert f"expected MD5 {'f' * 32}" in str(e.value) and f"got {md5}" in str(e.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]


def test_download_replaces_corrupt_file(tmp_path, served):
    server, md5 = served
    root = tmp_path / "data"
    root.mkdir()
    (root / ARCHIVE_NAME).write_bytes(b"junk")
    path = download_archive(root, server.url(), md5, progress=False)
    assert path.read_bytes() == server.body and server.hits == 1


def test_download_http_error(tmp_path, served):
    server, md5 = served
    with pytest.raises(DatasetError, match="HTTP 404"):
        download_archive(tmp_path / "data", server.url("/nope"), md5)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_connection_refused(tmp_path, served):
    server, md5 = served
    url = server.url()
    server.close()
    with pytest.raises(DatasetError, match="download of .* failed"):
        download_archive(tmp_path / "data", url, md5, timeout=5.0)


@pytest.mark.parametrize("path, message", [("/archive", "refused"), ("/no-length", "aborted")])
def test_download_size_limit(tmp_path, served, path, message):
    server, md5 = served
    with pytest.raises(DatasetError, match=message):
        download_archive(tmp_path / "data", server.url(path), md5, progress=False,
                         max_bytes=len(server.body) - 1)
    assert list((tmp_path / "data").iterdir()) == []


def test_load_with_download(tmp_path, served, capfd):
    server, md5 = served
    ds = load_cifar10(tmp_path / "data", url=server.url(), md5=md5, records_per_batch=N)
    members = member_bytes()
    assert reencode(ds.test_x, ds.test_y) == members[TEST_NAME]
    assert "100.0%" in capfd.readouterr().err
    load_cifar10(tmp_path / "data", url=server.url(), md5=md5, records_per_batch=N)
    assert server.hits == 1
