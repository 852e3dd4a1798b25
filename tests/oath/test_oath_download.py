"""download_oath and extract_release against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aurora_pipeline.errors import BadInputError
from aurora_pipeline.oath.download import download_oath, extract_release

TARBALL = "oath_v1.1_20181026.tgz"
LABELS = b"header lines\nclass2,class6,picNum,picType,rotAng\n0,0,00001,arc,010\n"


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.ignore_range``;
    with ``server.drop_after`` set, the next response stops after that many bytes."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not server.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.drop_after is not None:
            payload, server.drop_after = payload[: server.drop_after], None
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ignore_range, httpd.drop_after = {}, [], False, None
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _tarball(members: dict[str, bytes], top: str = "oath_v1.1/") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _release_tarball() -> bytes:
    # Big enough (incompressible bytes) that a drop or a resume lands mid-file.
    noise = hashlib.sha256(b"0").digest() * 4096
    noise = bytes(b ^ (i % 251) for i, b in enumerate(noise))
    return _tarball(
        {
            "classifications/classifications.csv": LABELS,
            "classifications/train_test_split.csv": b"0.0\n",
            "images/cropped_scaled/00001.png": noise,
        }
    )


def _publish(server, data: bytes, with_checksums: bool = True) -> str:
    server.files[f"/oath/{TARBALL}"] = data
    if with_checksums:
        digest = hashlib.sha256(data).hexdigest()
        server.files["/oath/SHA256SUM"] = f"{digest}  {TARBALL}\n0000  other.tgz\n".encode()
    return f"{server.base}/oath/{TARBALL}"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/oath/{TARBALL}"


def test_download_verifies_unpacks_and_cleans_up(server, tmp_path):
    url = _publish(server, _release_tarball())
    dest = download_oath(tmp_path / "oath", url, backoff=0.01)
    assert (dest / "classifications" / "classifications.csv").read_bytes() == LABELS
    assert (dest / "images" / "cropped_scaled" / "00001.png").stat().st_size == 32 * 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oath"]  # no .part, tarball or temp folder left
    assert [path for path, _ in server.requests] == ["/oath/SHA256SUM", f"/oath/{TARBALL}"]


def test_given_sha256_skips_the_checksum_list_and_keeps_archive_on_request(server, tmp_path):
    data = _release_tarball()
    url = _publish(server, data, with_checksums=False)
    download_oath(tmp_path / "oath", url, hashlib.sha256(data).hexdigest(), keep_archive=True, backoff=0.01)
    assert (tmp_path / TARBALL).read_bytes() == data
    assert [path for path, _ in server.requests] == [f"/oath/{TARBALL}"]


def test_resumes_from_a_partial_file_with_a_range_request(server, tmp_path):
    data = _release_tarball()
    url = _publish(server, data)
    half = len(data) // 2
    (tmp_path / f"{TARBALL}.part").write_bytes(data[:half])
    download_oath(tmp_path / "oath", url, keep_archive=True, backoff=0.01)
    assert server.requests[-1] == (f"/oath/{TARBALL}", f"bytes={half}-")
    assert (tmp_path / TARBALL).read_bytes() == data


def test_server_that_ignores_range_restarts_instead_of_appending(server, tmp_path):
    data = _release_tarball()
    url = _publish(server, data)
    server.ignore_range = True
    (tmp_path / f"{TARBALL}.part").write_bytes(b"x" * 1000)  # not a prefix of the file
    download_oath(tmp_path / "oath", url, keep_archive=True, backoff=0.01)
    assert (tmp_path / TARBALL).read_bytes() == data


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    data = _release_tarball()
    url = _publish(server, data)
    server.drop_after = 5000
    download_oath(tmp_path / "oath", url, hashlib.sha256(data).hexdigest(), keep_archive=True, backoff=0.01)
    tarball_requests = [r for path, r in server.requests if path.endswith(TARBALL)]
    assert tarball_requests == [None, "bytes=5000-"]
    assert (tmp_path / TARBALL).read_bytes() == data


def test_checksum_mismatch_is_refused_and_the_bad_file_deleted(server, tmp_path):
    url = _publish(server, _release_tarball())
    with pytest.raises(BadInputError, match="SHA256 is .* expected 0{64}"):
        download_oath(tmp_path / "oath", url, "0" * 64, backoff=0.01)
    assert list(tmp_path.iterdir()) == []  # neither the tarball, nor a .part, nor the release


def test_no_checksum_available_refuses_before_downloading(server, tmp_path):
    url = _publish(server, _release_tarball(), with_checksums=False)
    with pytest.raises(BadInputError, match="--sha256"):
        download_oath(tmp_path / "oath", url, backoff=0.01)
    assert all(not path.endswith(TARBALL) for path, _ in server.requests)


def test_offline_error_says_where_to_put_the_files(tmp_path):
    dest = tmp_path / "oath"
    with pytest.raises(BadInputError) as caught:
        download_oath(dest, _closed_port_url(), "a" * 64, backoff=0.01)
    message = str(caught.value)
    assert "cannot reach" in message
    assert f"{dest}/classifications/classifications.csv" in message
    assert f"{dest}/images/cropped_scaled/00001.png" in message
    assert not dest.exists()


def test_hand_copied_tarball_with_sha256_needs_no_network(tmp_path):
    data = _release_tarball()
    (tmp_path / TARBALL).write_bytes(data)
    dest = download_oath(tmp_path / "oath", _closed_port_url(), hashlib.sha256(data).hexdigest())
    assert (dest / "classifications" / "classifications.csv").read_bytes() == LABELS


def test_existing_release_is_not_downloaded_again(tmp_path):
    dest = tmp_path / "oath"
    (dest / "classifications").mkdir(parents=True)
    (dest / "classifications" / "classifications.csv").write_bytes(LABELS)
    assert download_oath(dest, _closed_port_url()) == dest  # a network call would fail


def test_non_empty_unrelated_folder_is_refused(tmp_path):
    dest = tmp_path / "oath"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match="holds no OATH label file"):
        download_oath(dest, _closed_port_url(), "a" * 64)
    assert (dest / "notes.txt").read_text() == "mine"


def _evil_member(kind: str, outside: Path) -> tarfile.TarInfo:
    if kind == "dotdot":
        info = tarfile.TarInfo("oath_v1.1/../evil")
    elif kind == "absolute":
        info = tarfile.TarInfo(str(outside / "evil"))
    elif kind == "symlink":
        info = tarfile.TarInfo("oath_v1.1/images/etc")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
    elif kind == "relative_symlink":
        info = tarfile.TarInfo("oath_v1.1/images/up")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../.."
    elif kind == "hardlink":
        info = tarfile.TarInfo("oath_v1.1/images/passwd")
        info.type, info.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    else:  # device
        info = tarfile.TarInfo("oath_v1.1/images/null")
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "relative_symlink", "hardlink", "device"])
def test_extractor_refuses_members_that_escape(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / TARBALL
    evil = _evil_member(kind, tmp_path)
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("oath_v1.1/classifications/classifications.csv")
        good.size = len(LABELS)
        tar.addfile(good, io.BytesIO(LABELS))
        if evil.isfile():
            evil.size = 5
            tar.addfile(evil, io.BytesIO(b"pwned"))
        else:
            tar.addfile(evil)
    with pytest.raises(BadInputError) as caught:
        extract_release(archive, work / "oath")
    assert f"'{evil.name}'" in str(caught.value)
    assert not (work / "oath").exists()
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in work.iterdir()) == [TARBALL]  # temporary folder removed


def test_extractor_accepts_a_release_without_top_folder_and_the_singular_spelling(tmp_path):
    archive = tmp_path / TARBALL
    archive.write_bytes(_tarball({"classification/classification.csv": LABELS}, top=""))
    dest = extract_release(archive, tmp_path / "oath")
    assert (dest / "classification" / "classification.csv").read_bytes() == LABELS


def test_extractor_refuses_an_archive_without_labels(tmp_path):
    archive = tmp_path / TARBALL
    archive.write_bytes(_tarball({"readme.txt": b"hello"}))
    with pytest.raises(BadInputError, match="holds no classifications/classifications.csv"):
        extract_release(archive, tmp_path / "oath")
    assert not (tmp_path / "oath").exists()
