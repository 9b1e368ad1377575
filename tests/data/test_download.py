"""causalrep data get (data/download.py): downloads from file:// URLs and a local HTTP server that serves Range
requests and counts the bytes it sends; resume, a server that ignores Range, checksums, bad names. No network."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import attrs
import h5py
import numpy as np
import pytest

from causalrep.cli import main
from causalrep.data import download
from causalrep.data.download import DatasetSource, check, git_blob_sha1
from causalrep.data.shapes3d import Shapes3D
from causalrep.errors import DataError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class RangeHandler(BaseHTTPRequestHandler):
    """GET / serves server.payload; honours `Range: bytes=N-` (206, or 416 past the end) unless server.mode is
    "ignore" (always 200 and the whole file); mode "drop" closes the connection after half of the body."""

    def do_GET(self):
        srv = self.server
        data, rng = srv.payload, self.headers.get("Range")
        srv.ranges.append(rng)
        start = 0
        if rng and srv.mode != "ignore":
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "drop":
            body = body[: len(body) // 2]
        srv.sent += len(body)  # counted before it is written: the client may finish reading (and the test assert)
        self.wfile.write(body)  # before this thread runs on

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.payload, srv.mode, srv.sent, srv.ranges = PAYLOAD, "range", 0, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/file.bin"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def use_source(monkeypatch, **fields):
    """Replace shapes3d's entry by a source with these fields (filename fake.bin, PAYLOAD's SHA-256)."""
    src = DatasetSource(**{"url": "file:///nonexistent/fake.bin", "sha256": SHA, "filename": "fake.bin",
                           "data_name": "shapes3d", **fields})
    monkeypatch.setitem(download.SOURCES, "shapes3d", {"h5": src})
    return src


def get(tmp_path, *extra) -> int:
    return main(["data", "get", "shapes3d", "--dest", str(tmp_path / "dest"), "--no-progress", *extra])


def test_full_download_from_a_file_url_is_verified_and_loads_as_data_path(tmp_path, monkeypatch, capsys):
    # a 2-image 3dshapes.h5 in the original layout: images uint8 (N, 64, 64, 3), labels on the factor grid
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    labels = np.array([[0.0, 0.1, 0.2, 0.75, 0.0, -30.0], [0.9, 0.9, 0.9, 1.25, 3.0, 30.0]])
    src_file = tmp_path / "src" / "3dshapes.h5"
    src_file.parent.mkdir()
    with h5py.File(src_file, "w") as f:
        f["images"], f["labels"] = images, labels
    blob = src_file.read_bytes()
    use_source(monkeypatch, url=src_file.as_uri(), sha256=hashlib.sha256(blob).hexdigest(), size=len(blob),
               filename="3dshapes.h5")
    assert get(tmp_path) == 0
    out = capsys.readouterr().out
    final = tmp_path / "dest" / "3dshapes.h5"
    assert final.read_bytes() == blob and not (tmp_path / "dest" / "3dshapes.h5.part").exists()
    assert f"data.path: {final.resolve()}" in out.splitlines()
    ds = Shapes3D(path=str(final))  # the printed data.path is what the shapes3d loader reads
    x = ds.images(np.array([[9, 9, 9, 7, 3, 14]]))  # labels row 2 -> factor indices
    assert np.array_equal((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), images[1])
    # a second call finds the verified file and reads nothing from the (now unreachable) URL
    src_file.unlink()
    assert get(tmp_path) == 0 and final.read_bytes() == blob


def test_url_option_replaces_the_url_and_keeps_the_checksum(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror.bin"
    mirror.write_bytes(PAYLOAD)
    use_source(monkeypatch)  # its own URL does not exist
    assert get(tmp_path, "--url", mirror.as_uri()) == 0
    assert (tmp_path / "dest" / "fake.bin").read_bytes() == PAYLOAD


def test_resume_reads_only_the_missing_bytes(tmp_path, monkeypatch, server):
    use_source(monkeypatch, url=server.url)
    dest = tmp_path / "dest"
    dest.mkdir()
    half = 123_457
    (dest / "fake.bin.part").write_bytes(PAYLOAD[:half])
    assert get(tmp_path) == 0
    assert server.ranges == [f"bytes={half}-"] and server.sent == len(PAYLOAD) - half
    assert (dest / "fake.bin").read_bytes() == PAYLOAD and not (dest / "fake.bin.part").exists()


def test_a_server_that_ignores_range_restarts_the_download(tmp_path, monkeypatch, server):
    server.mode = "ignore"
    use_source(monkeypatch, url=server.url)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "fake.bin.part").write_bytes(b"x" * 1000)  # not even the file's first bytes: overwritten
    assert get(tmp_path) == 0
    assert server.ranges == ["bytes=1000-"] and server.sent == len(PAYLOAD)
    assert (dest / "fake.bin").read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_without_a_body(tmp_path, monkeypatch, server):
    use_source(monkeypatch, url=server.url)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "fake.bin.part").write_bytes(PAYLOAD)
    assert get(tmp_path) == 0  # the server answers 416 (bytes */300000): nothing left to fetch
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"] and server.sent == 0
    assert (dest / "fake.bin").read_bytes() == PAYLOAD


def test_a_dropped_connection_keeps_the_part_and_the_next_call_resumes(tmp_path, monkeypatch, server, capsys):
    server.mode = "drop"
    use_source(monkeypatch, url=server.url)
    assert get(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    part = tmp_path / "dest" / "fake.bin.part"
    assert err.startswith(f"error: download of {server.url} stopped at 150,000") and len(err.splitlines()) == 1
    assert part.read_bytes() == PAYLOAD[:150_000]
    server.mode, server.sent = "range", 0
    assert get(tmp_path) == 0
    assert server.ranges[-1] == "bytes=150000-" and server.sent == 150_000
    assert (tmp_path / "dest" / "fake.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_exits_2_names_both_hashes_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    src = tmp_path / "bad.bin"
    src.write_bytes(PAYLOAD[:-1] + b"\0")
    use_source(monkeypatch, url=src.as_uri())
    assert get(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    got = hashlib.sha256(src.read_bytes()).hexdigest()
    assert err == (f"error: fake.bin from {src.as_uri()}: SHA-256 mismatch: expected {SHA}, got {got}; the download "
                   f"{tmp_path / 'dest' / 'fake.bin.part'} was deleted")
    assert list((tmp_path / "dest").iterdir()) == []


def test_a_wrong_file_already_in_place_is_an_error_and_is_kept(tmp_path, monkeypatch, capsys):
    use_source(monkeypatch, size=len(PAYLOAD))
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "fake.bin").write_bytes(b"short")
    assert get(tmp_path) == 2
    err = capsys.readouterr().err
    assert "is already there but size mismatch: expected 300,000 bytes, got 5" in err
    assert (tmp_path / "dest" / "fake.bin").read_bytes() == b"short"


def test_unknown_name_or_variant_exits_2_listing_the_valid_ones(tmp_path, capsys):
    assert main(["data", "get", "celeba", "--dest", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: data get: unknown dataset 'celeba'; valid names: dsprites, mpi3d, shapes3d\n"
    assert main(["data", "get", "mpi3d", "--variant", "huge", "--dest", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: data get mpi3d: unknown --variant 'huge'; valid: toy, realistic, real\n"
    assert list(tmp_path.iterdir()) == []


def test_git_blob_sha1_is_gits_object_id(tmp_path):
    f = tmp_path / "hello.txt"
    f.write_bytes(b"hello\n")
    # `echo hello | git hash-object --stdin`
    assert git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"
    src = DatasetSource(url="", sha256=None, filename="hello.txt", git_sha1="ce013625030ba8dba906f756967f9e9ca394464a")
    assert check(f, src) is None
    f.write_bytes(b"hello")
    assert check(f, src) == ("git blob SHA-1 mismatch: expected ce013625030ba8dba906f756967f9e9ca394464a, got "
                             "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0")  # `printf hello | git hash-object --stdin`


def test_npz_structure_check_for_files_without_a_published_checksum(tmp_path):
    f = tmp_path / "mpi3d_toy.npz"
    np.savez(f, images=np.zeros((2, 4, 4, 3), np.uint8))
    src = DatasetSource(url="", sha256=None, filename=f.name, npz_member="images", npz_shape=(2, 4, 4, 3))
    assert check(f, src) is None
    assert check(f, attrs.evolve(src, npz_shape=(1_036_800, 64, 64, 3))) == \
        "'images' is uint8 (2, 4, 4, 3), expected uint8 (1036800, 64, 64, 3)"
    assert check(f, attrs.evolve(src, npz_member="imgs")) == "not an MPI3D .npz: no array 'imgs'"
    cut = tmp_path / "cut.npz"
    cut.write_bytes(f.read_bytes()[:100])
    assert check(cut, src).startswith("not a readable .npz file")


def test_content_range_header():
    assert download._content_range("bytes 10-99/100") == (10, 99, 100)
    assert download._content_range("bytes */300000") == (None, None, 300_000)
    assert download._content_range("") == (None, None, None)


def test_every_shipped_source_is_verified_somehow():
    """No file is accepted unchecked: each source has a SHA-256, a git blob id or the .npz structure check."""
    for name, variants in download.SOURCES.items():
        for variant, src in variants.items():
            assert src.sha256 or src.git_sha1 or src.npz_shape, (name, variant)
            assert src.url.startswith("https://") and src.url.endswith(src.filename)
            assert src.data_name == name
    with pytest.raises(DataError, match="unknown dataset 'x'"):
        download.source("x")
