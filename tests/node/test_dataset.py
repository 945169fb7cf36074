"""node/dataset.py: the download (over a real HTTP server), finding the spec's archive without
downloading, and writing a spec for a local archive."""
from __future__ import annotations

import dataclasses
import http.server
import threading

import pytest

from consensus.cifar10 import ARCHIVE_NAME
from consensus.data import DatasetError, split_hash
from consensus.spec import ChainSpec, preset
from node.dataset import download_archive, ensure_archive, load_node_dataset, spec_for_archive
from tests.cifar_fixture import TEST_NAME, cifar_members, encode_records, make_cifar_archive, write_tar_gz

N = 20  # records per batch in the small archives


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


def small_spec(md5: str, n: int = N):
    """cifar10-resnet18's rules on an archive of n records per file (E shrunk to fit)."""
    base = preset("cifar10-resnet18")
    return dataclasses.replace(
        base, dataset=dataclasses.replace(base.dataset, train_size=5 * n, test_size=n, archive_md5=md5),
        evaluation=dataclasses.replace(base.evaluation, size=n))


def test_ensure_archive_downloads_a_known_source_once(tmp_path, served, capfd):
    server, md5 = served
    spec = small_spec(md5)
    ds = load_node_dataset(spec.dataset, tmp_path / "data", sources={md5: server.url()})
    assert encode_records(list(zip(ds.test_y.tolist(), (bytes(x.flatten().tolist()) for x in ds.test_x)))) == \
        encode_records(cifar_members(N)[TEST_NAME])
    assert "100.0%" in capfd.readouterr().err
    load_node_dataset(spec.dataset, tmp_path / "data", sources={md5: server.url()})
    assert server.hits == 1


def test_ensure_archive_never_downloads_when_present(tmp_path, served):
    """The archive under another name in a read-only directory: found by MD5, no request made."""
    server, md5 = served
    data = tmp_path / "ro"
    data.mkdir()
    (data / "my-sample.tar.gz").write_bytes(server.body)
    data.chmod(0o555)
    try:
        path = ensure_archive(small_spec(md5).dataset, data, sources={md5: server.url()})
    finally:
        data.chmod(0o755)
    assert path == data / "my-sample.tar.gz" and server.hits == 0


def test_ensure_archive_refuses_unknown_archives(tmp_path, served):
    server, md5 = served
    with pytest.raises(DatasetError, match="not the official CIFAR-10 one, so it is never downloaded") as e:
        ensure_archive(small_spec(md5).dataset, tmp_path, sources={})
    assert "(--dataset-dir;" in str(e.value)          # the dataset's option, not --data-dir (the chain's)
    with pytest.raises(DatasetError, match="downloading is off"):
        ensure_archive(small_spec(md5).dataset, tmp_path, download=False, sources={md5: server.url()})
    assert server.hits == 0
    assert ensure_archive(preset("tiny").dataset, tmp_path) is None  # generated data: nothing to fetch


def test_spec_for_archive_pins_the_archive(tmp_path):
    md5 = make_cifar_archive(tmp_path / "s.tar.gz", records_per_batch=N)
    base = preset("cifar10-resnet18")
    base = dataclasses.replace(base, evaluation=dataclasses.replace(base.evaluation, size=N))
    spec = spec_for_archive(base, tmp_path / "s.tar.gz")
    assert spec.name == "cifar10-resnet18-sample" and spec.chain_id != base.chain_id
    d = spec.dataset
    assert (d.id, d.train_size, d.test_size, d.archive_md5) == ("cifar10", 5 * N, N, md5)
    ds = load_node_dataset(d, tmp_path)  # the pinned hashes are checked on load
    assert d.train_sha256 == split_hash(ds.train_x, ds.train_y) and d.test_sha256 == split_hash(ds.test_x, ds.test_y)
    assert ChainSpec.from_json(spec.to_json()).chain_id == spec.chain_id
    assert spec_for_archive(base, tmp_path / "s.tar.gz", name="mine").name == "mine"
    # the genesis claim is the genesis model's count on this archive's E, measured
    from consensus.training import Replayer, genesis_state
    assert spec.evaluation.genesis_correct == Replayer(spec, ds).accuracy(genesis_state(spec)).correct
    # everything but the data, the genesis claim (and the name) is the preset's
    assert dataclasses.replace(spec, name=base.name, dataset=base.dataset, evaluation=base.evaluation) == base


def test_spec_for_archive_refusals(tmp_path):
    base = preset("cifar10-resnet18")
    make_cifar_archive(tmp_path / "s.tar.gz", records_per_batch=N)
    with pytest.raises(DatasetError, match=f"{N} test images, fewer than the evaluation set E"):
        spec_for_archive(base, tmp_path / "s.tar.gz")
    with pytest.raises(DatasetError, match="synthetic data, not a CIFAR-10 archive"):
        spec_for_archive(preset("tiny"), tmp_path / "s.tar.gz")
    with pytest.raises(DatasetError, match="no such file"):
        spec_for_archive(base, tmp_path / "absent.tar.gz")
    members = {name: encode_records(recs) for name, recs in cifar_members(N).items()}
    members[next(iter(members))] = encode_records(cifar_members(N + 1)[TEST_NAME])  # data_batch_1: N + 1
    write_tar_gz(tmp_path / "uneven.tar.gz", members)
    with pytest.raises(DatasetError, match=r"hold \[21, 20, 20, 20, 20\]"):
        spec_for_archive(base, tmp_path / "uneven.tar.gz")


def test_loading_checks_the_pinned_hashes(tmp_path):
    md5 = make_cifar_archive(tmp_path / "s.tar.gz", records_per_batch=N)
    spec = small_spec(md5)
    bad = dataclasses.replace(spec.dataset, test_sha256="0" * 64)
    with pytest.raises(DatasetError, match="refusing to run on different data"):
        load_node_dataset(bad, tmp_path, download=False)
    wrong_size = dataclasses.replace(spec.dataset, train_size=5 * (N + 1))
    with pytest.raises(DatasetError, match=f"expected {(N + 1) * 3073}"):
        load_node_dataset(wrong_size, tmp_path, download=False)
    with pytest.raises(DatasetError, match="must be 5 x the records of one training file"):
        load_node_dataset(dataclasses.replace(spec.dataset, train_size=5 * N + 1), tmp_path)
